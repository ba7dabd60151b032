"""A server-side deadline per request.

A request still running after `request_timeout_seconds` is cancelled (its transaction
rolls back with it) and answered `503 request_timeout`, so a slow dependency cannot pin
workers and connections forever. When the deadline finds the app waiting for more of the
request body, the client is the slow party: that is `408 request_body_timeout` (RFC 9110
§15.5.9) and the connection is closed. Long-lived streams (SSE, WebSocket, long-poll)
manage their own lifetimes and are exempt.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.http.observe import route_template
from shelfwise.http.problems import ProblemResponse, problem
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
        reading_body = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def receive_tracked() -> Message:
            nonlocal reading_body
            reading_body = True
            message = await receive()
            reading_body = False  # not in a `finally`: a cancelled wait must stay True
            return message

        try:
            async with asyncio.timeout(self.seconds):
                await self.app(scope, receive_tracked, send_tracked)
        except TimeoutError:
            route = route_template(scope)
            client_slow = reading_body
            REQUEST_TIMEOUTS.labels(route).inc()
            log.warning(
                "request_timeout", route=route, seconds=self.seconds, waiting_for_body=client_slow
            )
            if started:
                raise
            await self._answer(scope, client_slow)(scope, receive, send)

    def _answer(self, scope: Scope, client_slow: bool) -> ProblemResponse:
        if client_slow:
            return problem(
                408,
                "request_body_timeout",
                f"The request body did not arrive within {self.seconds:g}s",
                scope,
                headers={"Connection": "close"},
            )
        return problem(
            503,
            "request_timeout",
            f"The request took longer than {self.seconds:g}s",
            scope,
            headers={"Retry-After": "1"},
        )
