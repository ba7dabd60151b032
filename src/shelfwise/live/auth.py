"""(Re-)authenticating long-lived connections.

An HTTP request is authenticated once; a stream lives for hours. Every open connection
re-checks its credential every `live_recheck_seconds`: a revoked session or API key, a
disabled user, or an expired access token closes it (the client reconnects and signs in
again). WebSockets authenticate with the session cookie (Origin-checked against
cross-site WebSocket hijacking) or with an access token in their first message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.requests import HTTPConnection

from shelfwise.context import AppContext
from shelfwise.errors import Unauthenticated
from shelfwise.identity import service
from shelfwise.identity.dependencies import KNOWN_SCOPES, SESSION_COOKIE
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES, Scope


@dataclass(frozen=True, slots=True)
class Credential:
    kind: Literal["bearer", "session"]
    value: str


def credential_of(connection: HTTPConnection) -> Credential | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return Credential("bearer", token.strip())
    cookie = connection.cookies.get(SESSION_COOKIE)
    return Credential("session", cookie) if cookie else None


def same_origin(connection: HTTPConnection, trusted: list[str]) -> bool:
    origin = connection.headers.get("origin")
    if origin is None:
        return True  # not a browser: no ambient cookie risk
    host = connection.headers.get("host", "")
    scheme = "https" if connection.url.scheme in ("https", "wss") else "http"
    return origin == f"{scheme}://{host}" or origin in trusted


async def authenticate(ctx: AppContext, credential: Credential) -> Principal | None:
    now = ctx.clock.now()
    async with ctx.db.sessions() as session:
        if credential.kind == "session":
            record = await ctx.session_store.resolve(credential.value, now=now)
            user_id, session_id = (record.user_id, record.id) if record else (None, None)
        elif service.looks_like_api_key(credential.value):
            key = await service.resolve_api_key(session, credential.value, now=now)
            if key is None:
                return None
            scopes = frozenset(Scope(s) for s in key.scopes if s in KNOWN_SCOPES)
            return Principal(kind=PrincipalKind.API_KEY, id=key.id, scopes=scopes)
        else:
            try:
                user_id, session_id = ctx.tokens.verify(credential.value, now=now).user_id, None
            except Unauthenticated:
                return None
        user = await service.get_active_user(session, user_id) if user_id else None
    if user is None:
        return None
    role = Role(user.role)
    return Principal(
        kind=PrincipalKind.USER,
        id=user.id,
        scopes=ROLE_SCOPES[role],
        role=role,
        session_id=session_id,
    )
