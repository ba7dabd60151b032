"""Authentication and authorization as dependencies.

`CurrentPrincipal` accepts, in this order:
1. `Authorization: Bearer <JWT access token>` (API clients, mobile, the dashboard's fetches
   may also use it);
2. `Authorization: Bearer sw_...` — an integration's API key;
3. the `__Host-session` cookie of a browser session — then unsafe methods must also pass
   the CSRF checks (`identity/csrf.py`).

The credential rules themselves live in `identity/authenticate.py`, shared with live
streams and WebSockets; this module adds what only HTTP has: CSRF for cookie sessions,
and counting failures. The user's role is re-read on every request, so disabling an
account or changing a role takes effect at once rather than when a token expires. After
authentication the principal's own rate limit applies; failed authentication counts
against the client IP's budget.
`require_scope` and `require_role` build the function-level checks each route declares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from shelfwise.context import AppContext
from shelfwise.errors import PermissionDenied, Unauthenticated
from shelfwise.http.deps import ContextDep
from shelfwise.http.ratelimit import Policy, client_ip, refuse, remember
from shelfwise.identity import authenticate
from shelfwise.identity.authenticate import Refused
from shelfwise.identity.credentials import SESSION_COOKIE as SESSION_COOKIE
from shelfwise.identity.credentials import credential_of
from shelfwise.identity.csrf import check_csrf
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal
from shelfwise.identity.scopes import Scope
from shelfwise.observability.metrics import AUTH_FAILURES

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


async def _accepted(request: Request, ctx: AppContext, outcome: Principal | Refused) -> Principal:
    if isinstance(outcome, Refused):
        raise await _failure(request, ctx, outcome.reason, outcome.detail)
    return outcome


async def _from_session_cookie(request: Request, ctx: AppContext, token: str) -> Principal:
    record = await authenticate.session_of(ctx, token)
    if isinstance(record, Refused):
        raise await _failure(request, ctx, record.reason, record.detail)
    check_csrf(
        request,
        secret=ctx.settings.session_secret.get_secret_value().encode(),
        session_id=record.id,
        trusted_origins=ctx.settings.cors_origins,
    )
    principal = await authenticate.user_principal(ctx, record.user_id, session_id=record.id)
    return await _accepted(request, ctx, principal)


async def get_principal(
    request: Request,
    _bearer: BearerDep,  # declared for OpenAPI's security schemes; read by credential_of
    _cookie: SessionCookieDep,
    ctx: ContextDep,
) -> Principal:
    # No session dependency: a JWT or a browser session is checked without the ORM (one
    # read-pool statement), so most requests never build a Session they do not use.
    credential = credential_of(request)  # the parser every transport shares
    if credential is None:
        raise await _failure(
            request, ctx, "missing", "Send Authorization: Bearer <token or API key>, or sign in"
        )
    if credential.kind == "bearer":
        principal = await _accepted(
            request, ctx, await authenticate.from_bearer(ctx, credential.value)
        )
    else:
        principal = await _from_session_cookie(request, ctx, credential.value)
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
