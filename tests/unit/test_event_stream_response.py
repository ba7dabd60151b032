"""An event stream's body skips the middleware stack once its start went through it —
unless a layer re-encodes the body."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.live.streaming import EventStreamResponse, StreamSendMiddleware


class Layer:
    """A middleware that records every message it passes on; optionally gzip-like."""

    def __init__(self, app: ASGIApp, *, encodes: bool = False) -> None:
        self.app, self.encodes, self.seen = app, encodes, list[str]()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def spy(message: Message) -> None:
            self.seen.append(message["type"])
            if self.encodes and message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Content-Encoding"] = "gzip"
            await send(message)

        await self.app(scope, receive, spy)


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"id: 1\n\n"
        yield b"id: 2\n\n"

    await EventStreamResponse(body())(scope, receive, send)


async def run(layer: Layer) -> tuple[list[Message], Scope]:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/stream",
        "headers": [],
        "asgi": {"spec_version": "2.4"},
    }
    sent: list[Message] = []

    async def server_send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("not read with ASGI spec 2.4")

    await StreamSendMiddleware(layer)(scope, receive, server_send)
    return sent, scope


async def test_body_chunks_go_straight_to_the_server() -> None:
    layer = Layer(endpoint)
    sent, scope = await run(layer)
    assert layer.seen == ["http.response.start"]
    assert [m.get("body") for m in sent] == [None, b"id: 1\n\n", b"id: 2\n\n", b""]
    assert sent[-1]["more_body"] is False
    assert scope["state"]["direct_body_bytes"] == 14  # for the access log


async def test_a_re_encoded_body_passes_every_layer() -> None:
    layer = Layer(endpoint, encodes=True)
    sent, scope = await run(layer)
    assert layer.seen == ["http.response.start"] + ["http.response.body"] * 3
    assert len(sent) == 4
    assert "direct_body_bytes" not in scope["state"]
