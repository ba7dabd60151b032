"""A server-side deadline per request, watched by one timer per process.

A request still running after `request_timeout_seconds` is cancelled (its transaction
rolls back with it) and answered `503 request_timeout`, so a slow dependency cannot pin
workers and connections forever. When the deadline finds the app waiting for more of the
request body, the client is the slow party: that is `408 request_body_timeout` (RFC 9110
§15.5.9) and the connection is closed. Long-lived streams (SSE, WebSocket, long-poll)
manage their own lifetimes and are exempt.

Why not `asyncio.timeout` per request: that schedules a loop timer per request. Cancelled
at the response, each timer (with a copy of the request's context) stayed referenced by
the loop long enough to survive a young collection; ~35,000 of them made every
generation-1 pass of the collector take 26-55 ms, stalling every request in flight
(docs/performance.md, "the read tail"). Here the requests in flight sit in one dict, and
one loop timer, set for the oldest deadline, cancels whatever is past its deadline. Every
deadline is "arrival + the same number of seconds", so arrival order is deadline order: the
oldest entry is the next to expire, and a sweep stops at the first that is not due. Under
steady traffic the timer fires about once per deadline period (every ~30 s), not per
request. The cancellation is told from any other the way `asyncio.timeout` tells it:
the task's cancel count (`Task.cancelling` / `uncancel`).
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


class InFlight:
    """One request under its deadline: its task, when it is due, and what the answer to
    its expiry depends on (was the app waiting for body? had the response started?)."""

    __slots__ = (
        "_receive",
        "_send",
        "cancelling",
        "due",
        "expired",
        "reading_body",
        "started",
        "task",
    )

    def __init__(self, task: asyncio.Task[object], due: float, receive: Receive, send: Send):
        self.task = task
        self.due = due
        self.cancelling = task.cancelling()  # cancellations already requested by others
        self.expired = False
        self.reading_body = False
        self.started = False
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        self.reading_body = True
        message = await self._receive()
        self.reading_body = False  # not in a `finally`: a cancelled wait must stay True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    def expire(self) -> None:
        self.expired = True
        self.task.cancel()

    def settle(self) -> bool:
        """Undo the deadline's cancellation (once); whether it was the deadline alone that
        cancelled the request, not a client disconnect or a shutdown as well."""
        if not self.expired:
            return False
        self.expired = False
        return self.task.uncancel() <= self.cancelling


class Deadlines:
    """The requests in flight in one process, oldest first, and the one timer that
    cancels those past their deadline. One event loop at a time (as uvicorn runs an app):
    a request seen on another loop starts the watch afresh there."""

    def __init__(self) -> None:
        self._in_flight: dict[InFlight, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, request: InFlight, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._loop:
            self._loop, self._timer, self._in_flight = loop, None, {}
        self._in_flight[request] = None
        if self._timer is None:
            self._timer = loop.call_at(request.due, self._expire)

    def discard(self, request: InFlight) -> None:
        self._in_flight.pop(request, None)

    def _expire(self) -> None:
        # A timer left from a finished request just finds a younger oldest entry (or none).
        loop = self._loop
        if loop is None or asyncio.get_running_loop() is not loop:
            return  # set on a loop the app has since left: the watch moved on
        self._timer = None
        now = loop.time()
        due: list[InFlight] = []
        for request in self._in_flight:
            if request.due > now:
                break
            due.append(request)
        for request in due:
            del self._in_flight[request]
            request.expire()
        if self._in_flight:
            oldest = next(iter(self._in_flight))
            self._timer = loop.call_at(oldest.due, self._expire)


class RequestTimeoutMiddleware:
    def __init__(self, app: ASGIApp, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.deadlines = Deadlines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAMING_PREFIXES):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None  # an ASGI server runs each request in a task
        request = InFlight(task, loop.time() + self.seconds, receive, send)
        self.deadlines.watch(request, loop)
        try:
            await self.app(scope, request.receive, request.send)
        except asyncio.CancelledError:
            if not request.settle():
                raise
        else:
            return
        finally:
            self.deadlines.discard(request)
            request.settle()  # the app swallowed the cancellation: balance the count anyway
        await self._timed_out(scope, receive, send, request)

    async def _timed_out(
        self, scope: Scope, receive: Receive, send: Send, request: InFlight
    ) -> None:
        route = route_template(scope)
        client_slow = request.reading_body
        REQUEST_TIMEOUTS.labels(route).inc()
        log.warning(
            "request_timeout", route=route, seconds=self.seconds, waiting_for_body=client_slow
        )
        if request.started:
            # Headers are gone: the server aborts the connection.
            raise TimeoutError(f"request past its {self.seconds:g}s deadline")
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
