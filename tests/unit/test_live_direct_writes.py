"""The hub writes a flush to a waiting SSE stream itself (decision 0038): without waking
its task, in order with whatever the task still has to write, exactly once — and the
queue takes over whenever the connection cannot take a write at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import cast

import httpx
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from shelfwise.config import Settings
from shelfwise.http.server_protocol import BODY_WRITER, BodyWriter, ShelfwiseHttpToolsProtocol
from shelfwise.live.audience import Batch
from shelfwise.live.hub import Hub, Subscription
from shelfwise.live.router import _direct_writes, _sse_body
from shelfwise.live.streaming import EventStreamResponse, StreamSendMiddleware
from tests.support import wait_until
from tests.unit.test_live_fanout import STAFF, STOCK, hub, positions, settled, stock_event


class Socket:
    """A direct writer that records what it wrote, or refuses while `full`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.full = False

    def __call__(self, batch: Batch) -> bool:
        if self.full:
            return False
        self.batches.append(positions(list(batch)))
        return True


async def waiting(live: Hub, direct: Socket) -> tuple[Subscription, asyncio.Task[object]]:
    subscription, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
    subscription.direct = direct
    task = asyncio.create_task(subscription.next_batch())
    assert not await settled(task)  # the transport waits, nothing queued
    return subscription, task


async def test_a_waiting_stream_is_written_by_the_flush_and_not_woken() -> None:
    live, socket = hub(), Socket()
    subscription, task = await waiting(live, socket)
    live.publish([stock_event(1), stock_event(2)])
    live.flush()
    live.publish([stock_event(3)])
    live.flush()
    assert socket.batches == [[1, 2], [3]]
    assert subscription.position == 3
    assert not await settled(task)  # never woken: nothing for it to write
    assert subscription.pending() == 0


async def test_a_refused_write_queues_and_later_batches_queue_behind_it() -> None:
    live, socket = hub(), Socket()
    subscription, task = await waiting(live, socket)
    socket.full = True  # e.g. the connection's writes are paused
    live.publish([stock_event(1)])
    live.flush()
    socket.full = False
    live.publish([stock_event(2)])  # the task has not taken [1] yet: no overtaking
    live.flush()
    assert socket.batches == []
    assert await settled(task)
    assert positions(list(task.result())) == [1, 2]  # type: ignore[arg-type]

    again = asyncio.create_task(subscription.next_batch())
    assert not await settled(again)
    live.publish([stock_event(3)])  # waiting again, nothing queued: direct once more
    live.flush()
    assert socket.batches == [[3]]
    assert not await settled(again)


async def test_no_direct_write_before_the_backlog_is_written() -> None:
    live, socket = hub(window=100), Socket()
    live.publish([stock_event(p) for p in range(1, 4)])
    resumed, _ = await live.subscribe(STOCK, STAFF, since=1, transport="sse")
    resumed.direct = socket
    live.publish([stock_event(4)])
    live.flush()
    assert socket.batches == []  # its task has not asked yet: queued
    assert positions(list(await resumed.next_batch())) == [2, 3, 4]


async def test_a_ping_does_not_stop_direct_writes() -> None:
    live, socket = hub(), Socket()
    subscription, task = await waiting(live, socket)
    subscription.ping()  # woken for a heartbeat, not run yet
    live.publish([stock_event(1)])
    live.flush()
    assert socket.batches == [[1]]
    assert await settled(task)
    assert list(task.result()) == []  # type: ignore[call-overload]  # the ping


async def test_a_closed_stream_is_not_written() -> None:
    live, socket = hub(), Socket()
    subscription, task = await waiting(live, socket)
    subscription.close("client")
    live.publish([stock_event(1)])
    live.flush()
    assert socket.batches == []
    assert await settled(task)


async def test_repeats_are_not_written_twice() -> None:
    live, socket = hub(), Socket()
    subscription, _ = await waiting(live, socket)
    live.publish([stock_event(1)])
    live.flush()
    subscription.offer(Batch([stock_event(1)]))  # a batch at or below the position
    assert socket.batches == [[1]]


def polled(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


class Transport:
    def __init__(self) -> None:
        self.data: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)


class Flow:
    write_paused = False


class Cycle:
    disconnected = False
    chunked_encoding: bool | None = True
    response_complete = False


def body_writer() -> tuple[BodyWriter, Transport, Flow, Cycle]:
    transport, flow, cycle = Transport(), Flow(), Cycle()
    return BodyWriter(cycle, flow, transport), transport, flow, cycle  # type: ignore[arg-type]


def test_the_body_writer_frames_chunks_and_refuses_when_it_must() -> None:
    writer, transport, flow, cycle = body_writer()
    chunk = BodyWriter.chunk(b"id: 1\n\n")
    assert chunk == b"7\r\nid: 1\n\n\r\n"
    assert writer.write(chunk, 7)
    flow.write_paused = True
    assert not writer.write(chunk, 7)
    flow.write_paused = False
    cycle.disconnected = True
    assert not writer.write(chunk, 7)
    cycle.disconnected, cycle.chunked_encoding = False, False  # a Content-Length response
    assert not writer.write(chunk, 7)
    assert transport.data == [chunk]
    assert writer.written == 7


async def test_the_stream_hands_the_server_writer_over_once_started() -> None:
    writer, transport, _, _ = body_writer()
    handed: list[BodyWriter] = []

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1\n\n"
        assert handed == [writer]
        writer.write(BodyWriter.chunk(b"id: 1\n\n"), 7)  # as the hub would

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        await EventStreamResponse(body(), on_direct=handed.append)(scope, receive, send)

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/stream",
        "headers": [],
        "asgi": {"spec_version": "2.4"},
        "extensions": {BODY_WRITER: writer},
    }
    sent: list[Message] = []

    async def server_send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        raise AssertionError("not read with ASGI spec 2.4")

    await StreamSendMiddleware(endpoint)(scope, receive, server_send)
    assert [m.get("body") for m in sent] == [None, b"retry: 1\n\n", b""]
    assert transport.data == [b"7\r\nid: 1\n\n\r\n"]
    assert scope["state"]["direct_body_bytes"] == 10 + 7  # both ways count in the access log


async def test_a_served_stream_gets_the_hubs_writes_as_valid_chunks() -> None:
    """Through uvicorn and the protocol `shelfwise serve` runs, read by an HTTP client:
    the chunks the hub writes are the stream's, in order, after its `retry:`."""
    live = hub()
    subscriptions: list[Subscription] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        subscription, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
        subscriptions.append(subscription)
        settings = cast(Settings, SimpleNamespace(live_retry_ms=1000))
        response = EventStreamResponse(
            _sse_body(settings, live, subscription, None),
            on_disconnect=lambda: subscription.close("client"),
            on_direct=_direct_writes(live, subscription),
        )
        await StreamSendMiddleware(response)(scope, receive, send)

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=ShelfwiseHttpToolsProtocol,
        lifespan="off",
        log_config=None,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await wait_until(polled(lambda: server.started), timeout=10, what="the server to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        written: list[bool] = []
        async with (
            httpx.AsyncClient(timeout=10) as client,
            client.stream("GET", f"http://127.0.0.1:{port}/v1/stream") as response,
        ):
            lines = response.aiter_lines()
            assert (await anext(lines)).startswith("retry: ")
            await wait_until(
                polled(lambda: bool(subscriptions) and subscriptions[0].direct is not None),
                timeout=10,
                what="the stream to start",
            )
            subscription = subscriptions[0]
            direct = subscription.direct
            assert direct is not None

            def spy(batch: Batch) -> bool:
                written.append(direct(batch))
                return written[-1]

            subscription.direct = spy
            await wait_until(
                polled(lambda: subscription._waiting), timeout=10, what="the task to wait"
            )
            live.publish([stock_event(1), stock_event(2)])
            live.flush()
            live.publish([stock_event(3)])
            live.flush()
            ids = []
            async for line in lines:
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if len(ids) == 3:
                    break
        assert ids == [1, 2, 3]
        assert written == [True, True]  # both flushes written by the hub itself
    finally:
        server.should_exit = True
        await serving


async def test_a_batch_over_the_queue_limit_is_not_written_either() -> None:
    live, socket = hub(queue_limit=3), Socket()
    subscription, task = await waiting(live, socket)
    live.publish([stock_event(p) for p in range(1, 5)])
    live.flush()
    assert socket.batches == []
    assert subscription.closed_reason == "slow_consumer"
    assert await settled(task)
