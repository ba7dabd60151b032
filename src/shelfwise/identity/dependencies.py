"""Authentication and authorization as dependencies.

`CurrentPrincipal` accepts, in this order:
1. `Authorization: Bearer <JWT access token>` (API clients, mobile, the dashboard's fetches
   may also use it);
2. `Authorization: Bearer sw_...` — an integration's API key;
3. the `__Host-session` cookie of a browser session — then unsafe methods must also pass
   the CSRF checks (`identity/csrf.py`).

The user is reloaded on every request, so disabling an account or changing a role takes
effect at once rather than when a token expires. After authentication the principal's own
rate limit applies; failed authentication counts against the client IP's budget.
`require_scope` and `require_role` build the function-level checks each route declares.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from shelfwise.context import AppContext
from shelfwise.errors import PermissionDenied, Unauthenticated
from shelfwise.http.deps import ContextDep
from shelfwise.http.ratelimit import Policy, client_ip, refuse, remember
from shelfwise.identity import service
from shelfwise.identity.csrf import check_csrf
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES, Scope
from shelfwise.observability.metrics import AUTH_FAILURES

KNOWN_SCOPES = frozenset(s.value for s in Scope)
SESSION_COOKIE = "__Host-session"
REFRESH_COOKIE = "__Host-refresh"

bearer = HTTPBearer(auto_error=False, description="JWT access token or API key")
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="Browser session (dashboard)"
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
SessionCookieDep = Annotated[str | None, Depends(session_cookie)]


async def _failure(request: Request, ctx: AppContext, reason: str, detail: str) -> Exception:
    """Count the failure against the client IP; past its budget, answer 429 instead."""
    AUTH_FAILURES.labels(reason).inc()
    if ctx.settings.rate_limit_enabled:
        decision = await ctx.limiter.hit(ctx.policies.anonymous, client_ip(request.scope))
        if not decision.allowed:
            return refuse(decision)
    return Unauthenticated(detail, reason=reason)


async def _user_principal(
    request: Request,
    ctx: AppContext,
    user_id: uuid.UUID,
    *,
    session_id: uuid.UUID | None = None,
) -> Principal:
    role = await ctx.roles.get(user_id)
    if role is None:
        raise await _failure(
            request, ctx, "inactive_user", "Account is disabled or no longer exists"
        )
    return Principal(
        kind=PrincipalKind.USER,
        id=user_id,
        scopes=ROLE_SCOPES[role],
        role=role,
        session_id=session_id,
    )


async def _from_bearer(request: Request, ctx: AppContext, presented: str) -> Principal:
    now = ctx.clock.now()
    if service.looks_like_api_key(presented):
        async with ctx.db.sessions() as session:
            key = await service.resolve_api_key(session, presented, now=now)
        if key is None:
            raise await _failure(request, ctx, "invalid_api_key", "API key is invalid or revoked")
        return Principal(
            kind=PrincipalKind.API_KEY,
            id=key.id,
            scopes=frozenset(Scope(s) for s in key.scopes if s in KNOWN_SCOPES),
        )
    try:
        claims = ctx.tokens.verify(presented, now=now)
    except Unauthenticated as exc:
        raise await _failure(request, ctx, "invalid_token", exc.detail) from exc
    return await _user_principal(request, ctx, claims.user_id)


async def _from_session_cookie(request: Request, ctx: AppContext, token: str) -> Principal:
    record = await ctx.session_store.resolve(token, now=ctx.clock.now())
    if record is None:
        raise await _failure(request, ctx, "invalid_session", "Session expired or signed out")
    check_csrf(
        request,
        secret=ctx.settings.session_secret.get_secret_value().encode(),
        session_id=record.id,
        trusted_origins=ctx.settings.cors_origins,
    )
    return await _user_principal(request, ctx, record.user_id, session_id=record.id)


async def get_principal(
    request: Request,
    credentials: BearerDep,
    cookie: SessionCookieDep,
    ctx: ContextDep,
) -> Principal:
    # No session dependency: a JWT or a browser session is checked without the ORM (one
    # read-pool statement), so most requests never build a Session they do not use.
    if credentials is not None:
        principal = await _from_bearer(request, ctx, credentials.credentials)
    elif cookie:
        principal = await _from_session_cookie(request, ctx, cookie)
    else:
        raise await _failure(
            request, ctx, "missing", "Send Authorization: Bearer <token or API key>, or sign in"
        )
    if ctx.settings.rate_limit_enabled:
        decision = await ctx.limiter.hit(ctx.policies.authenticated, principal.key)
        remember(request.scope, decision)
        if not decision.allowed:
            raise refuse(decision)
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: CurrentPrincipal) -> Principal:
        if scope not in principal.scopes:
            AUTH_FAILURES.labels("missing_scope").inc()
            raise PermissionDenied(f"Requires the '{scope.value}' scope")
        return principal

    return check


def require_role(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            AUTH_FAILURES.labels("missing_role").inc()
            raise PermissionDenied("Your role may not do this")
        return principal

    return check


def route_limit(pick: Callable[[AppContext], Policy]) -> Callable[..., Awaitable[None]]:
    """A per-IP limit for one route (login, register, refresh)."""

    async def check(request: Request, ctx: ContextDep) -> None:
        if not ctx.settings.rate_limit_enabled:
            return
        decision = await ctx.limiter.hit(pick(ctx), client_ip(request.scope))
        remember(request.scope, decision)
        if not decision.allowed:
            raise refuse(decision)

    return check


CatalogReader = Annotated[Principal, Depends(require_scope(Scope.CATALOG_READ))]
CatalogWriter = Annotated[Principal, Depends(require_scope(Scope.CATALOG_WRITE))]
StockReader = Annotated[Principal, Depends(require_scope(Scope.STOCK_READ))]
StockWriter = Annotated[Principal, Depends(require_scope(Scope.STOCK_WRITE))]
LedgerReader = Annotated[Principal, Depends(require_scope(Scope.LEDGER_READ))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
LoginLimit = Depends(route_limit(lambda ctx: ctx.policies.login))
RegisterLimit = Depends(route_limit(lambda ctx: ctx.policies.register))
RefreshLimit = Depends(route_limit(lambda ctx: ctx.policies.refresh))
