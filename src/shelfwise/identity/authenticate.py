"""Credentials → principals, once, for every transport: HTTP requests
(`identity/dependencies.py`), SSE streams and WebSockets, and the periodic re-check of
open connections (`live/auth.py`).

Nothing here speaks HTTP. A refused credential comes back as a `Refused` with a reason;
the caller decides what it costs (an HTTP request counts it against the client's IP and
answers 401, a stream is closed). The user's role is read on every authentication, so
disabling an account or changing a role takes effect at once (`ActiveRoles`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shelfwise.context import AppContext
from shelfwise.errors import Unauthenticated
from shelfwise.identity import service
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES, Scope
from shelfwise.identity.sessions import SessionRecord

KNOWN_SCOPES = frozenset(s.value for s in Scope)


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # invalid_api_key | invalid_token | invalid_session | inactive_user
    detail: str


async def from_bearer(ctx: AppContext, presented: str) -> Principal | Refused:
    """`Authorization: Bearer` — a JWT access token, or an integration's API key."""
    now = ctx.clock.now()
    if service.looks_like_api_key(presented):
        async with ctx.db.sessions() as session:
            key = await service.resolve_api_key(session, presented, now=now)
        if key is None:
            return Refused("invalid_api_key", "API key is invalid or revoked")
        return Principal(
            kind=PrincipalKind.API_KEY,
            id=key.id,
            scopes=frozenset(Scope(s) for s in key.scopes if s in KNOWN_SCOPES),
        )
    try:
        claims = ctx.tokens.verify(presented, now=now)
    except Unauthenticated as exc:
        return Refused("invalid_token", exc.detail)
    return await user_principal(ctx, claims.user_id)


async def session_of(ctx: AppContext, token: str) -> SessionRecord | Refused:
    """The browser session behind a `__Host-session` cookie (the caller checks CSRF)."""
    record = await ctx.session_store.resolve(token, now=ctx.clock.now())
    return (
        record
        if record is not None
        else Refused("invalid_session", "Session expired or signed out")
    )


async def user_principal(
    ctx: AppContext, user_id: uuid.UUID, *, session_id: uuid.UUID | None = None
) -> Principal | Refused:
    role = await ctx.roles.get(user_id)
    if role is None:
        return Refused("inactive_user", "Account is disabled or no longer exists")
    return Principal(
        kind=PrincipalKind.USER,
        id=user_id,
        scopes=ROLE_SCOPES[role],
        role=role,
        session_id=session_id,
    )
