"""Access log and RED metrics, as two small pure-ASGI middlewares (the app installs
them folded into one layer with the request id, error boundary and security headers:
`edge.py`).

Pure ASGI rather than `BaseHTTPMiddleware`: no extra task per request and streaming
responses pass through untouched. The route *template* is read from the scope after
routing (`scope["route"]`), so labels stay bounded.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.observability.metrics import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS

# Event streams write their body past the stack (`live/streaming.py`) and leave the count.
DIRECT_BYTES = "direct_body_bytes"

log = structlog.get_logger("shelfwise.access")
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class AccessLogMiddleware:
    """One log line per request with status, duration and route; adds `Server-Timing`."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent_bytes = 0

        async def send_timed(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                MutableHeaders(scope=message).append("Server-Timing", f"app;dur={elapsed_ms:.1f}")
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            if self.enabled:
                client = scope.get("client")
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    route=route_template(scope),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    bytes=sent_bytes + scope.get("state", {}).get(DIRECT_BYTES, 0),
                    client=client[0] if client else None,
                )


class RedMetrics:
    """The request counter, latency histogram and in-flight gauge, with their children
    kept at hand: `labels()` takes a lock and hashes its arguments on every call, and the
    set of (method, route, status) is small and bounded."""

    in_flight = HTTP_IN_FLIGHT

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = HTTP_REQUESTS.labels(
                method, route, str(status)
            )
        counter.inc()
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._histograms[(method, route)] = HTTP_LATENCY.labels(method, route)
        histogram.observe(seconds)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._metrics = RedMetrics()

    def _observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self._metrics.observe(method, route, status, seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            HTTP_IN_FLIGHT.dec()
            self._observe(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )
