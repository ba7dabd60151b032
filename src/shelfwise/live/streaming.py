"""Event-stream bodies past the middleware stack.

Each middleware layer wraps `send`. For an ordinary response that is a few calls; for an
event stream it is the same few calls for every chunk, for hours, on every connection.
Our layers act on `http.response.start` only (headers, status, timing), so once a
stream's start message has passed all of them unchanged in encoding, its body chunks may
go straight to the server: `StreamSendMiddleware`, the outermost layer, then leaves the
server's `send` in the scope, and `EventStreamResponse` writes its chunks there.

Past that, the server offers a `BodyWriter` (http/server_protocol.py): with `on_direct`,
the response hands it to whoever produces the stream's frames, and the live hub writes
a flush's frames through it from the flush itself, without waking this response's task
at all (decision 0038). The chunks it writes count in the access log's bytes too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Callable, Mapping

from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.http.observe import DIRECT_BYTES
from shelfwise.http.server_protocol import BODY_WRITER, BodyWriter

SERVER_SEND = "server_send"


class StreamSendMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_started(message: Message) -> None:
            # A layer that re-encodes the body (gzip) must see every chunk: no shortcut.
            if message["type"] == "http.response.start" and not any(
                name.lower() == b"content-encoding" for name, _ in message.get("headers", ())
            ):
                state[SERVER_SEND] = send
            await send(message)

        await self.app(scope, receive, send_started)


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response whose chunks bypass the middleware stack once its
    headers went through it (see the module docstring).

    With `on_disconnect`, the client's disconnect is watched by one plain task that calls
    it (the stream then ends itself), instead of Starlette's task group of two tasks per
    response: thousands of open streams keep fewer objects for the garbage collector to
    scan."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterable[bytes],
        status_code: int = 200,  # FastAPI reads a route's default status from here
        *,
        headers: Mapping[str, str] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_direct: Callable[[BodyWriter], None] | None = None,
    ) -> None:
        super().__init__(content, status_code, headers=headers)
        self._on_disconnect = on_disconnect
        self._on_direct = on_direct
        self._scope: Scope = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._scope = scope
        self._state = scope.setdefault("state", {})
        if self._on_disconnect is None:
            await super().__call__(scope, receive, send)
            return
        listener = asyncio.create_task(self._listen(receive, self._on_disconnect))
        try:
            await self.stream_response(send)
        finally:
            listener.cancel()

    @staticmethod
    async def _listen(receive: Receive, on_disconnect: Callable[[], None]) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        on_disconnect()

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        direct: Send | None = self._state.get(SERVER_SEND)
        write = direct or send
        written = 0
        # Only past every layer unchanged (`direct`): a re-encoded body is never written raw.
        writer: BodyWriter | None = None
        if direct is not None and self._on_direct is not None:
            writer = self._scope.get("extensions", {}).get(BODY_WRITER)
            if writer is not None:
                self._on_direct(writer)
        try:
            async for chunk in self.body_iterator:
                body = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                written += len(body)
                await write({"type": "http.response.body", "body": body, "more_body": True})
            await write({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if direct is not None:
                self._state[DIRECT_BYTES] = written + (writer.written if writer else 0)
