"""The process-wide objects the application builds in its lifespan.

Kept on `app.state.ctx`; request handlers reach them through the dependencies in
`shelfwise.http.deps`, never through module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from shelfwise.catalog.cache import CatalogCache
from shelfwise.clock import Clock
from shelfwise.config import Settings
from shelfwise.db import Database
from shelfwise.driverpool import DriverPool
from shelfwise.http.pagination import CursorCodec
from shelfwise.http.ratelimit import Policy, RateLimiter
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.refresh import RefreshPolicy
from shelfwise.identity.service import ActiveRoles
from shelfwise.identity.sessions import SessionStore
from shelfwise.identity.tokens import TokenIssuer
from shelfwise.live.hub import Hub
from shelfwise.orders.admission import HotLevelGate


@dataclass(frozen=True, slots=True)
class RatePolicies:
    anonymous: Policy
    authenticated: Policy
    login: Policy
    register: Policy
    refresh: Policy
    login_failures: Policy
    live_connect: Policy

    @classmethod
    def from_settings(cls, settings: Settings) -> RatePolicies:
        return cls(
            anonymous=Policy.parse("anonymous", settings.rate_limit_anonymous),
            authenticated=Policy.parse("authenticated", settings.rate_limit_authenticated),
            login=Policy.parse("login", settings.rate_limit_login),
            register=Policy.parse("register", settings.rate_limit_register),
            refresh=Policy.parse("refresh", settings.rate_limit_refresh),
            login_failures=Policy.parse("login_failures", settings.login_failures_per_account),
            live_connect=Policy.parse("live_connect", settings.rate_limit_live_connect),
        )


@dataclass(slots=True)
class AppContext:
    settings: Settings
    db: Database
    clock: Clock
    hasher: PasswordHasher
    tokens: TokenIssuer
    cursors: CursorCodec
    limiter: RateLimiter
    policies: RatePolicies
    session_store: SessionStore
    refresh_policy: RefreshPolicy
    driver: DriverPool  # psycopg itself: hot reads, principals' roles, placing orders
    roles: ActiveRoles  # principals' roles, read through `driver` (single flight)
    admission: HotLevelGate  # hot stock levels: a gate per level, sold out answered here
    redis: Redis | None = None
    hub: Hub | None = None  # started in the lifespan of API processes
    catalog_cache: CatalogCache = field(default_factory=CatalogCache)
