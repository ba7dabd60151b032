"""Authentication and authorization as dependencies.

`CurrentPrincipal` authenticates a Bearer credential — a JWT access token or an API key —
and reloads the user on every request, so a disabled user or a changed role takes effect
immediately rather than when the token expires. `require_scope` and `require_role` build
the function-level checks each route declares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shelfwise.errors import PermissionDenied, Unauthenticated
from shelfwise.http.deps import ClockDep, SessionDep, TokensDep
from shelfwise.identity import service
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES, Scope
from shelfwise.observability.metrics import AUTH_FAILURES

KNOWN_SCOPES = frozenset(s.value for s in Scope)

bearer = HTTPBearer(auto_error=False, description="JWT access token or API key")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _fail(reason: str, detail: str) -> Unauthenticated:
    AUTH_FAILURES.labels(reason).inc()
    return Unauthenticated(detail)


async def get_principal(
    request: Request,
    credentials: BearerDep,
    session: SessionDep,
    tokens: TokensDep,
    clock: ClockDep,
) -> Principal:
    if credentials is None:
        raise _fail("missing", "Send Authorization: Bearer <token or API key>")
    presented = credentials.credentials
    now = clock.now()
    if service.looks_like_api_key(presented):
        key = await service.resolve_api_key(session, presented, now=now)
        if key is None:
            raise _fail("invalid_api_key", "API key is invalid or revoked")
        principal = Principal(
            kind=PrincipalKind.API_KEY,
            id=key.id,
            scopes=frozenset(Scope(s) for s in key.scopes if s in KNOWN_SCOPES),
        )
    else:
        try:
            claims = tokens.verify(presented, now=now)
        except Unauthenticated as exc:
            raise _fail("invalid_token", exc.detail) from exc
        user = await service.get_active_user(session, claims.user_id)
        if user is None:
            raise _fail("inactive_user", "Account is disabled or no longer exists")
        role = Role(user.role)
        principal = Principal(
            kind=PrincipalKind.USER, id=user.id, scopes=ROLE_SCOPES[role], role=role
        )
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


CatalogWriter = Annotated[Principal, Depends(require_scope(Scope.CATALOG_WRITE))]
StockReader = Annotated[Principal, Depends(require_scope(Scope.STOCK_READ))]
StockWriter = Annotated[Principal, Depends(require_scope(Scope.STOCK_WRITE))]
LedgerReader = Annotated[Principal, Depends(require_scope(Scope.LEDGER_READ))]
Admin = Annotated[Principal, Depends(require_role(Role.ADMIN))]
