"""(Re-)authenticating long-lived connections.

An HTTP request is authenticated once; a stream lives for hours. The credential of every
open connection is re-checked every `live_recheck_seconds`: a revoked session or API key,
a disabled user, or an expired access token closes it (the client reconnects and signs in
again). The check is per *credential*, not per connection (`Reauthorization`): 5,000
streams opened with one token cost one lookup per interval, not 330 a second.
WebSockets authenticate with the session cookie (Origin-checked against cross-site
WebSocket hijacking) or with an access token in their first message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog
from starlette.requests import HTTPConnection

from shelfwise.context import AppContext
from shelfwise.identity import authenticate as identity
from shelfwise.identity.authenticate import Refused
from shelfwise.identity.dependencies import SESSION_COOKIE
from shelfwise.identity.principal import Principal

log = structlog.get_logger("shelfwise.live")


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
    """The principal behind a connection's credential, None if it is refused (the same
    rules as an HTTP request: `identity/authenticate.py`; no CSRF check, streams are GETs
    and WebSocket cookies are Origin-checked at connect)."""
    if credential.kind == "bearer":
        outcome = await identity.from_bearer(ctx, credential.value)
    else:
        record = await identity.session_of(ctx, credential.value)
        if isinstance(record, Refused):
            return None
        outcome = await identity.user_principal(ctx, record.user_id, session_id=record.id)
    return None if isinstance(outcome, Refused) else outcome


class Revocable(Protocol):
    def close(self, reason: str) -> None: ...


class Reauthorization:
    """Open connections grouped by credential; each credential is checked at most once
    per `interval` (on a `sweep`), and a refused one closes all of its connections with
    reason `revoked`. A connection's credential was checked when it connected, so a new
    credential starts its interval then."""

    def __init__(self, check: Callable[[Credential], Awaitable[bool]], *, interval: float):
        self._check = check
        self.interval = interval
        self._open: dict[Credential, set[Revocable]] = {}
        self._checked_at: dict[Credential, float] = {}

    def watch(self, credential: Credential, connection: Revocable, *, now: float) -> None:
        self._open.setdefault(credential, set()).add(connection)
        self._checked_at.setdefault(credential, now)

    def unwatch(self, credential: Credential, connection: Revocable) -> None:
        connections = self._open.get(credential)
        if connections is not None:
            connections.discard(connection)
            if not connections:
                del self._open[credential]
                self._checked_at.pop(credential, None)

    async def sweep(self, *, now: float) -> int:
        """Check every credential whose last check is `interval` old; returns how many."""
        due = [c for c, at in self._checked_at.items() if now - at >= self.interval]
        for credential in due:
            try:
                allowed = await self._check(credential)
            except Exception as exc:  # e.g. the database is down: keep them, retry next sweep
                log.warning("live_recheck_failed", error=type(exc).__name__)
                continue
            if allowed:
                if credential in self._checked_at:
                    self._checked_at[credential] = now
                continue
            self._checked_at.pop(credential, None)
            for connection in self._open.pop(credential, set()):
                connection.close("revoked")
        return len(due)


def recheck_for(ctx: AppContext) -> Callable[[Credential], Awaitable[bool]]:
    async def still_allowed(credential: Credential) -> bool:
        return await authenticate(ctx, credential) is not None

    return still_allowed
