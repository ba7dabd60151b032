"""The edge of every request: request id, access log, RED metrics, the error boundary and
the security headers, in one pure-ASGI layer.

They were five layers (decision 0002 keeps their order, which is the order of the work
here): each wrapped `send` in its own closure, re-checked the message type, parsed the
response headers into a `MutableHeaders` and read the clock. One layer does each of
those once per request — one coroutine frame, one `send` wrapper, one clock read at the
start, one pass over the response headers. The helpers stay with their subjects
(`request_id.py`, `observe.py`, `problems.py`, `security_headers.py`); the five old
classes are gone (their cost, per layer, is in docs/performance.md).

What the order meant, and still holds:
- the request id is picked first and bound into the logging context for the whole
  request, so the access log line and every problem body carry it;
- the access log and the metrics time everything below, and see the status the client
  got — also the 500 the error boundary answered;
- the error boundary answers problem+json for anything that escaped the routers and the
  layers below, *inside* the request id, access log and metrics (so a crash is logged,
  counted and carries `X-Request-ID`);
- the security headers are set on every response that passes (setdefault: a route's own
  value wins). The boundary's own 500 now carries them too (it did not when the boundary
  sat outside the security layer).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.http.observe import DIRECT_BYTES, AccessLog, RedMetrics, route_template
from shelfwise.http.problems import problem_for_exception
from shelfwise.http.request_id import pick_request_id
from shelfwise.http.security_headers import HSTS, STATIC_HEADERS, csp_for

_REQUEST_ID = b"x-request-id"
_CONTENT_TYPE = b"content-type"
_CSP = b"content-security-policy"
_SERVER_TIMING = b"server-timing"


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == _REQUEST_ID:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, access_log: bool = True, hsts: bool = False) -> None:
        self.app = app
        self.access_log = AccessLog() if access_log else None
        self.metrics = RedMetrics()
        # Encoded once: the fixed security headers every response gets unless it has them.
        self._fixed = [(name.lower().encode(), value.encode()) for name, value in STATIC_HEADERS]
        if hsts:
            self._fixed.append((HSTS[0].lower().encode(), HSTS[1].encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket":  # the id is bound for its logs; nothing else applies
                await self._websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = pick_request_id(_incoming_request_id(scope))
        scope.setdefault("state", {})["request_id"] = request_id
        request_id_bytes = request_id.encode("latin-1")
        status = 500
        sent_bytes = 0
        response_started = False

        async def send_at_edge(message: Message) -> None:
            nonlocal status, sent_bytes, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                message["headers"] = self._headers(
                    scope, message.get("headers", ()), request_id_bytes, elapsed_ms
                )
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        self.metrics.in_flight.inc()
        try:
            try:
                await self.app(scope, receive, send_at_edge)
            except Exception as exc:
                if response_started:
                    raise  # headers are gone; the server will abort the connection
                await problem_for_exception(exc, scope)(scope, receive, send_at_edge)
        finally:
            self.metrics.in_flight.dec()
            route = route_template(scope)
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["method"], route, status, seconds)
            if self.access_log is not None:
                client = scope.get("client")
                self.access_log.request(
                    method=scope["method"],
                    path=scope["path"],
                    route=route,
                    status=status,
                    duration_ms=round(seconds * 1000, 2),
                    bytes=sent_bytes + scope.get("state", {}).get(DIRECT_BYTES, 0),
                    client=client[0] if client else None,
                )
            structlog.contextvars.reset_contextvars(**tokens)

    def _headers(
        self,
        scope: Scope,
        raw: Iterable[tuple[bytes, bytes]],
        request_id: bytes,
        elapsed_ms: float,
    ) -> list[tuple[bytes, bytes]]:
        """The response's headers plus the edge's: security headers the response lacks,
        `Server-Timing` appended, `X-Request-ID` replacing any the app set."""
        headers: list[tuple[bytes, bytes]] = []
        present: set[bytes] = set()
        content_type = b""
        for name, value in raw:
            lowered = name.lower()
            if lowered == _REQUEST_ID:
                continue
            if lowered == _CONTENT_TYPE:
                content_type = value
            present.add(lowered)
            headers.append((name, value))
        headers.extend(pair for pair in self._fixed if pair[0] not in present)
        if _CSP not in present:
            csp = csp_for(scope, content_type.decode("latin-1"))
            headers.append((_CSP, csp.encode("latin-1")))
        headers.append((_SERVER_TIMING, f"app;dur={elapsed_ms:.1f}".encode("latin-1")))
        headers.append((_REQUEST_ID, request_id))
        return headers

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = pick_request_id(_incoming_request_id(scope))
        scope.setdefault("state", {})["request_id"] = request_id
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
