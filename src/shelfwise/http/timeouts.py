"""A server-side deadline per request.

A request still running after `request_timeout_seconds` is cancelled (its transaction
rolls back with it) and answered `503 request_timeout`, so a slow dependency cannot pin
workers and connections forever. Long-lived streams (SSE, WebSocket, long-poll) manage
their own lifetimes and are exempt.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.http.observe import route_template
from shelfwise.http.problems import problem
from shelfwise.observability.metrics import REQUEST_TIMEOUTS

log = structlog.get_logger("shelfwise.timeouts")
STREAMING_PREFIXES = ("/v1/stream", "/v1/ws", "/v1/poll")


class RequestTimeoutMiddleware:
    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAMING_PREFIXES):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive, send_tracked)
        except TimeoutError:
            route = route_template(scope)
            REQUEST_TIMEOUTS.labels(route).inc()
            log.warning("request_timeout", route=route, seconds=self.seconds)
            if started:
                raise
            response = problem(
                503,
                "request_timeout",
                f"The request took longer than {self.seconds:g}s",
                scope,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
