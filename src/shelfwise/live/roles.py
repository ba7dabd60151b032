"""Which requests an instance answers, by its role (`shelfwise serve --role`).

Live connections are served by processes of their own (`--role live`): a fan-out burst to
thousands of subscribers then costs those processes' event loops and CPU, never an order's.
The load balancer sends /v1/stream, /v1/ws and /v1/poll to the live instances and
everything else to the API instances (`--role api`); `--role all` (the default) answers
everything, as one process did before.

A request that reaches the wrong role was misrouted by the proxy in front: it is answered
`421 Misdirected Request` (RFC 9110 §15.5.20: "not able to produce a response for this
target; the client may retry over a different connection"), problem+json with code
`wrong_role`, so the mistake shows at once in the proxy's logs and the client's error
instead of as a half-working instance. A WebSocket handshake is closed with 1008 (policy)
before it is accepted (the client sees 403). Health and metrics are answered by every role.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from shelfwise.config import ServerRole
from shelfwise.http.problems import problem

LIVE_PATHS = frozenset({"/v1/stream", "/v1/ws", "/v1/poll"})
EVERY_ROLE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def serves(role: ServerRole, path: str) -> bool:
    """Whether an instance of `role` answers `path`."""
    if role is ServerRole.ALL or path in EVERY_ROLE_PATHS:
        return True
    return (path in LIVE_PATHS) == (role is ServerRole.LIVE)


class RoleGateMiddleware:
    """Answers out-of-role requests with 421 before routing, auth or limits spend anything."""

    def __init__(self, app: ASGIApp, *, role: ServerRole) -> None:
        self.app = app
        self.role = role

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or serves(self.role, scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "wrong_role"})
            return
        where = "a live instance" if scope["path"] in LIVE_PATHS else "an API instance"
        response = problem(
            421,
            "wrong_role",
            f"This is a {self.role.value} instance; {scope['path']} is served by {where}. "
            "The load balancer should have sent it there (docs/deploy.md).",
            scope,
            role=self.role.value,
        )
        await response(scope, receive, send)
