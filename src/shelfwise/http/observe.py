"""What the edge layer (`edge.py`) needs for the access log and the RED metrics: the
access logger (bound once per logging configuration), the route *template* read from the
scope after routing (`scope["route"]`, so labels stay bounded) and the metric children
kept at hand.
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.types import Scope

from shelfwise.observability.metrics import HTTP_IN_FLIGHT, HTTP_LATENCY, HTTP_REQUESTS

# Event streams write their body past the stack (`live/streaming.py`) and leave the count.
DIRECT_BYTES = "direct_body_bytes"

log = structlog.get_logger("shelfwise.access")
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class AccessLog:
    """The access logger, bound once per logging configuration.

    `structlog.get_logger` gives a lazy proxy that binds a new logger (with a new
    `PrintLogger`) on every call, so that a reconfiguration takes effect at once —
    `configure_logging` for each app, `capture_logs` in tests (which is why loggers are not
    cached on first use). One line per request paid for that binding each time; this keeps
    the bound logger until structlog's configuration is replaced."""

    def __init__(self) -> None:
        self._logger: Any = None
        self._processors: object = None
        self._factory: object = None
        self._wrapper: object = None

    def request(self, **fields: Any) -> None:
        config = structlog.get_config()
        if (
            config["processors"] is not self._processors
            or config["logger_factory"] is not self._factory
            or config["wrapper_class"] is not self._wrapper
        ):
            self._processors = config["processors"]
            self._factory = config["logger_factory"]
            self._wrapper = config["wrapper_class"]
            self._logger = log.bind()
        self._logger.info("request", **fields)


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
