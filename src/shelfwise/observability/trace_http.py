"""The HTTP server span: FastAPI's, trimmed to one span per request, plus the request id.

The server span itself is FastAPI's (its native OpenTelemetry support, active as soon as
a tracer provider is installed): it wraps the whole middleware stack, continues an
incoming `traceparent`, is named by the route template (`POST /v1/orders`, bounded like
the RED metrics' labels) and records the status. `FASTAPI_TELEMETRY` keeps only that
span: by default FastAPI also starts a span for dependency resolution, the endpoint and
serialization of every request — three more spans to sample, record and export, which
made `GET /v1/products/{id}` cost twice the CPU with tracing on (docs/performance.md,
"Tracing off and on"); the statement spans below the server span already say where a
request spent its time. FastAPI's OpenTelemetry metrics and logs stay off (Prometheus
and structlog have them), and probes and scrapes are not traced at all.

FastAPI's span starts outside our stack, before the request id exists, so this pure-ASGI
layer — right after RequestId, and only when tracing is on
(docs/decisions/0002-middleware-order.md) — adds it: from a trace to the access log line
and back.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID = "shelfwise.request_id"
# Load-balancer probes and Prometheus scrapes: several a second, each a trace that says
# nothing (the same paths the rate limiter exempts).
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


FASTAPI_TELEMETRY: TelemetryConfig = {
    "operation_spans": False,
    "metrics": False,
    "logs": False,
    "exclude": _untraced,
}


class RequestIdSpanMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            span = trace.get_current_span()  # FastAPI's server span, current in the stack
            # Set by the edge layer, just outside (`http/edge.py`).
            request_id = scope.get("state", {}).get("request_id")
            if isinstance(request_id, str) and span.is_recording():
                span.set_attribute(REQUEST_ID, request_id)
        await self.app(scope, receive, send)
