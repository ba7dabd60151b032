"""Redis, the shared state of several instances, and what each use of it does without it.

Redis is optional (`REDIS_URL`); when configured it holds what instances must agree on.
When it is unreachable nothing may hang and nothing may be corrupted, so each use picks
a side (docs/deploy.md, "Failure modes"):

- rate limits and login throttling **fail open** to this process's own in-memory limits
  (`http/ratelimit.py`): still a limit per instance, just not shared, for as long as
  Redis is down (re-tried every `REDIS_RETRY_SECONDS`);
- live fan-out **fails over** to PostgreSQL NOTIFY (`live/feeds.py`), which the relay
  sends anyway: live clients miss nothing;
- browser sessions stored in Redis **fail closed** (`FailClosedSessions`): a session
  that cannot be checked is not trusted, so cookie requests and sign-ins answer 503 with
  `Retry-After`; bearer tokens and API keys, checked against PostgreSQL, keep working.

Every client gets short timeouts, so a Redis host that drops packets costs a request at
most `socket_connect_timeout`, never the kernel's TCP timeout, and one immediate retry on
a fresh connection after a connection error: when Redis restarts, every pooled connection
is dead, and without it each one would cost a request a 503 (or a 5 s skip) on its first
use after Redis is back. A timeout is not retried (it would double the wait). The operator sees
`shelfwise_dependency_up{dependency="redis"}`, `shelfwise_dependency_failures_total`,
a `redis_unreachable` warning per component at the transition, and `/readyz` detail.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shelfwise.errors import SessionStoreUnavailable
from shelfwise.identity.sessions import SessionRecord, SessionStore
from shelfwise.observability.metrics import DEPENDENCY_FAILURES, DEPENDENCY_UP

log = structlog.get_logger("shelfwise.redis")

# What "Redis is unreachable" looks like from redis-py (OSError: a reset mid-reply).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
REDIS_RETRY_SECONDS = 5.0  # how long a component skips Redis after a failure
CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 2.0,
    "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
}

_down: set[str] = set()  # components that last saw Redis fail (for logs at transitions)


def redis_client(url: str) -> Redis:
    return Redis.from_url(url, **CLIENT_OPTIONS)


def redis_pool(url: str) -> ConnectionPool:
    return ConnectionPool.from_url(url, **CLIENT_OPTIONS)


def redis_failed(component: str, exc: BaseException) -> None:
    DEPENDENCY_FAILURES.labels("redis", component).inc()
    DEPENDENCY_UP.labels("redis").set(0)
    if component not in _down:
        _down.add(component)
        log.warning("redis_unreachable", component=component, error=type(exc).__name__)


def redis_ok(component: str) -> None:
    if component in _down:
        _down.discard(component)
        log.info("redis_reachable", component=component)
        if not _down:
            DEPENDENCY_UP.labels("redis").set(1)


def _unavailable() -> SessionStoreUnavailable:
    return SessionStoreUnavailable(
        "Sign-in sessions cannot be checked right now; retry shortly.",
        headers={"Retry-After": "2"},
    )


class FailClosedSessions:
    """A `SessionStore` (Redis) whose outage is a 503, never a 500 and never a session
    taken on trust."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    @property
    def inner(self) -> SessionStore:
        return self._store

    async def create(
        self, user_id: uuid.UUID, *, now: datetime, user_agent: str, ip: str
    ) -> tuple[str, SessionRecord]:
        try:
            created = await self._store.create(user_id, now=now, user_agent=user_agent, ip=ip)
        except REDIS_DOWN as exc:
            redis_failed("sessions", exc)
            raise _unavailable() from exc
        redis_ok("sessions")
        return created

    async def resolve(self, token: str, *, now: datetime) -> SessionRecord | None:
        try:
            record = await self._store.resolve(token, now=now)
        except REDIS_DOWN as exc:
            redis_failed("sessions", exc)
            raise _unavailable() from exc
        redis_ok("sessions")
        return record

    async def revoke(
        self, session_id: uuid.UUID, *, user_id: uuid.UUID | None, reason: str, now: datetime
    ) -> bool:
        try:
            return await self._store.revoke(session_id, user_id=user_id, reason=reason, now=now)
        except REDIS_DOWN as exc:
            redis_failed("sessions", exc)
            raise _unavailable() from exc

    async def revoke_user(self, user_id: uuid.UUID, *, reason: str, now: datetime) -> int:
        try:
            return await self._store.revoke_user(user_id, reason=reason, now=now)
        except REDIS_DOWN as exc:
            redis_failed("sessions", exc)
            raise _unavailable() from exc

    async def list_user(self, user_id: uuid.UUID, *, now: datetime) -> list[SessionRecord]:
        try:
            return await self._store.list_user(user_id, now=now)
        except REDIS_DOWN as exc:
            redis_failed("sessions", exc)
            raise _unavailable() from exc
