"""Real-network helpers for live-update tests: an in-process uvicorn, a relay, SSE parsing.

httpx's ASGITransport buffers whole responses, so streams are tested over a real socket:
the test's own app object is served by uvicorn on a free port in the test's event loop
(same process, same injected clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn

from shelfwise.events.relay import Relay, RelayConfig
from tests.support import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an app whose lifespan already ran; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="websockets-sansio",
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await wait_until(started, what="uvicorn to start")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def running_relay(database_url: str) -> AsyncIterator[Relay]:
    stop = asyncio.Event()
    relay = Relay(database_url, RelayConfig(poll_interval=0.05), name="test")
    task = asyncio.create_task(relay.run(stop))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


@dataclass
class SseEvent:
    event: str
    data: dict[str, Any]
    id: int | None


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """Parse an event stream (comments and `retry:` lines are skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield SseEvent(
                    fields.get("event", "message"),
                    json.loads(fields["data"]),
                    int(fields["id"]) if fields.get("id") else None,
                )
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")


async def take(
    events: AsyncIterator[SseEvent], count: int, *, kind: str | None = None, timeout: float = 10.0
) -> list[SseEvent]:
    """The next `count` events (of `kind`, when given), within `timeout` seconds."""
    found: list[SseEvent] = []
    async with asyncio.timeout(timeout):
        async for event in events:
            if kind is None or event.event == kind:
                found.append(event)
                if len(found) == count:
                    return found
    raise AssertionError(f"stream ended after {len(found)} of {count} events")


async def settle(ctx: Any) -> None:
    """Wait until every committed event is published and this process's hub has it."""
    from sqlalchemy import text

    async def settled() -> bool:
        async with ctx.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE position IS NULL), "
                        "coalesce(max(position), 0) FROM outbox_events"
                    )
                )
            ).one()
        await ctx.hub.catch_up()
        return bool(row[0] == 0 and ctx.hub.head == row[1])

    await wait_until(settled, what="the outbox to be published and the hub to catch up")
