"""A server span per HTTP request (and WebSocket session), as a pure-ASGI middleware.

Placed right after RequestId (docs/decisions/0002-middleware-order.md), so the span knows
the request id, and every layer below — access log, error boundary, routes, database —
runs inside it. Named by the route *template* (`GET /v1/products/{product_id}`), read
from the scope after routing like the RED metrics, so span names stay bounded. Only
added to the stack when tracing is on (`observability/tracing.py`).

The OpenTelemetry ASGI instrumentation would do the same with one extra wrapper per
send and a span per body chunk; this keeps the stack's own conventions instead.
"""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.semconv.attributes import http_attributes, url_attributes
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.observability.tracing import tracer

REQUEST_ID = "shelfwise.request_id"
_PROPAGATED = (b"traceparent", b"tracestate")


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tracer = tracer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _PROPAGATED
        }
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        attributes = {
            http_attributes.HTTP_REQUEST_METHOD: method,
            url_attributes.URL_PATH: scope["path"],
            # Set by RequestIdMiddleware, just outside (`http/request_id.py`).
            REQUEST_ID: str(scope.get("state", {}).get("request_id", "")),
        }
        with self._tracer.start_as_current_span(
            method,
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            status = 0

            async def send_traced(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self.app(scope, receive, send_traced)
            finally:
                # The matched route, left in the scope by routing (as `http/observe.py` reads
                # it; this module stays below the HTTP layer).
                route = getattr(scope.get("route"), "path", None)
                if isinstance(route, str):
                    span.update_name(f"{method} {route}")
                    span.set_attribute(http_attributes.HTTP_ROUTE, route)
                if status:
                    span.set_attribute(http_attributes.HTTP_RESPONSE_STATUS_CODE, status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
