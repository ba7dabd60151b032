"""A response with a Content-Length leaves in one transport write, head and body together
(`HeadWithBody`); a streamed response's head, a HEAD response and `100 Continue` are
written at once, as uvicorn writes them."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from shelfwise.http.server_protocol import ShelfwiseHttpToolsProtocol
from tests.support import wait_until


class Transport:
    """What the protocol writes, one entry per `write` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def fixed(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


async def streamed(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def protocol(app: Any) -> tuple[ShelfwiseHttpToolsProtocol, Transport]:
    config = uvicorn.Config(app, http=ShelfwiseHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    served = ShelfwiseHttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    transport = Transport()
    served.connection_made(transport)  # type: ignore[arg-type]
    return served, transport


async def answered(served: ShelfwiseHttpToolsProtocol, request: bytes) -> None:
    served.data_received(request)

    async def done() -> bool:
        return served.cycle is not None and served.cycle.response_complete

    await wait_until(done, timeout=5, interval=0.001, what="the response")
    served.connection_lost(None)


async def test_a_response_with_a_length_is_one_write() -> None:
    served, transport = protocol(fixed)
    await answered(served, b"POST /v1/orders HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 201 Created\r\n")
    assert written.endswith(b"content-length: 2\r\n\r\n{}")


async def test_keep_alive_requests_each_get_one_write() -> None:
    served, transport = protocol(fixed)
    request = b"POST /v1/orders HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    for count in (1, 2):
        served.data_received(request)

        async def written(count: int = count) -> bool:
            await asyncio.sleep(0)
            return len(transport.writes) == count

        await wait_until(written, timeout=5, interval=0.001, what=f"response {count}")
    assert all(w.startswith(b"HTTP/1.1 201") and w.endswith(b"{}") for w in transport.writes)
    served.connection_lost(None)


async def test_a_streamed_response_sends_its_head_at_once() -> None:
    served, transport = protocol(streamed)
    await answered(served, b"GET /v1/stream HTTP/1.1\r\nhost: x\r\n\r\n")
    head, first, last = transport.writes
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert (first, last) == (b"1\r\na\r\n", b"0\r\n\r\n")


async def test_a_head_response_is_written_though_no_body_follows() -> None:
    served, transport = protocol(fixed)
    await answered(served, b"HEAD /v1/orders HTTP/1.1\r\nhost: x\r\n\r\n")
    (head,) = transport.writes
    assert head.startswith(b"HTTP/1.1 201 Created\r\n")
    assert head.endswith(b"\r\n\r\n")


async def test_100_continue_is_written_before_the_response() -> None:
    served, transport = protocol(fixed)
    served.data_received(
        b"POST /v1/orders HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n"
    )

    async def continued() -> bool:
        await asyncio.sleep(0)
        return bool(transport.writes)

    await wait_until(continued, timeout=5, interval=0.001, what="100 Continue")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    await answered(served, b"{}")
    assert len(transport.writes) == 2
    assert transport.writes[1].startswith(b"HTTP/1.1 201")
    assert transport.writes[1].endswith(b"{}")
