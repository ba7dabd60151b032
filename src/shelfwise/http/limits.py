"""Request body size limit.

A declared `Content-Length` over the limit is refused before a byte is read; a chunked
body is counted as it streams and refused the moment it crosses the limit, so an
oversized body is never buffered whole. A body framed by its `Content-Length` (or a request
without a body) is not counted: the server reads no further than the framing says, so
most requests pass with no wrapper at all.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.observability.metrics import HTTP_REJECTED_BODIES


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes")


class BodySizeLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_bytes: int, exempt: Callable[[Scope], bool] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Routes that stream large bodies to disk and enforce a limit of their own.
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt is not None and self.exempt(scope)):
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                HTTP_REJECTED_BODIES.inc()
                raise BodyTooLarge(self.max_bytes)
            if name == b"transfer-encoding":
                chunked = True
        if not chunked:
            # Framed by its Content-Length, or bodiless (RFC 9112 §6.3): the server reads
            # no further than that, so there is nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0

        async def receive_counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    HTTP_REJECTED_BODIES.inc()
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, receive_counted, send)
