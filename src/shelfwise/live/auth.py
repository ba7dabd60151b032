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

import structlog
from starlette.requests import HTTPConnection
from starlette.types import Scope

from shelfwise.context import AppContext
from shelfwise.http.ratelimit import Decision, client_ip
from shelfwise.identity import authenticate as identity
from shelfwise.identity.authenticate import Refused
from shelfwise.identity.credentials import credential_of as credential_of
from shelfwise.identity.principal import Principal
from shelfwise.live.credentials import Credential as Credential
from shelfwise.live.credentials import Reauthorization as Reauthorization

log = structlog.get_logger("shelfwise.live")


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


async def connect_decision(ctx: AppContext, scope: Scope) -> Decision | None:
    """The one connect limit of every live transport (SSE, long-poll, WebSocket):
    reconnect storms get `policies.live_connect` per client IP. None when limits are off."""
    if not ctx.settings.rate_limit_enabled:
        return None
    return await ctx.limiter.hit(ctx.policies.live_connect, client_ip(scope))


def recheck_for(ctx: AppContext) -> Callable[[Credential], Awaitable[bool]]:
    async def still_allowed(credential: Credential) -> bool:
        return await authenticate(ctx, credential) is not None

    return still_allowed
