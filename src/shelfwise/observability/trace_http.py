"""The request id on each request's server span.

The server span itself is FastAPI's (its native OpenTelemetry support, active as soon as
a tracer provider is installed): it wraps the whole middleware stack, continues an
incoming `traceparent`, is named by the route template (`POST /v1/orders`, bounded like
the RED metrics' labels) and records the status, plus spans for dependencies, the
endpoint and serialization. It starts outside our stack, before the request id exists,
so this pure-ASGI layer — right after RequestId, and only when tracing is on
(docs/decisions/0002-middleware-order.md) — adds it: from a trace to the access log line
and back.
"""

from __future__ import annotations

from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID = "shelfwise.request_id"


class RequestIdSpanMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            span = trace.get_current_span()  # FastAPI's server span, current in the stack
            # Set by RequestIdMiddleware, just outside (`http/request_id.py`).
            request_id = scope.get("state", {}).get("request_id")
            if isinstance(request_id, str) and span.is_recording():
                span.set_attribute(REQUEST_ID, request_id)
        await self.app(scope, receive, send)
