"""The live hub's fan-out cost in one process, without sockets or other processes.

    python -m bench.fanout [--subscribers 5000] [--events-per-flush 5] [--rounds 40]

N SSE-like subscribers on `stock` (a task each: wait for the hub, take the batch, build the
chunk as `live/router.py` does); each round publishes `--events-per-flush` stock events
through `Hub.publish`, flushes, and waits until every subscriber has built its chunk
(5 per flush: 20 events/s at a 250 ms flush interval). With `--direct` the flush writes
each waiting stream's chunk itself through a `BodyWriter` onto a sink, as `shelfwise
serve` does for SSE (decision 0038), and no subscriber task is woken. Prints the CPU time of this
process per write, and per flush of every subscriber — the least a flush interval can be
at that size. The socket write, uvicorn and the clients are *not* in it: it isolates what
the hub and the transport's Python code cost, so that a change to them can be compared
on a busy machine (the CPU time of one process barely depends on what else runs).
Runs a few seconds. To measure another tree's hub: `PYTHONPATH=<that tree>/src`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvloop

from shelfwise.events.outbox import PublishedEvent
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES
from shelfwise.live.channels import parse_channels
from shelfwise.live.hub import Hub, Subscription
from shelfwise.live.router import _sse_frame

STAFF = Principal(PrincipalKind.USER, uuid.uuid4(), ROLE_SCOPES[Role.STAFF], Role.STAFF)


def event(position: int) -> PublishedEvent:
    return PublishedEvent(
        position=position,
        id=position,
        type="stock.changed",
        aggregate_type="stock_level",
        aggregate_id=str(position),
        payload={
            "stock_level_id": position,
            "product_id": str(uuid.UUID(int=position)),
            "location_id": str(uuid.UUID(int=1)),
            "on_hand": position,
            "reserved": 0,
            "available": position,
            "level_version": position,
            "cause": "receipt",
            "reference": None,
        },
        version=position,
        created_at=datetime.now(UTC),
        published_at=None,
    )


def chunk(hub: Hub, events: Any) -> bytes:
    joined = getattr(hub, "joined", None)
    if joined is not None:
        return bytes(joined(events, "sse", _sse_frame, b""))
    return b"".join([hub.encoded(e, "sse", _sse_frame) for e in events])  # before audiences


class _Sink:
    """The socket side of a `BodyWriter` (`--direct`): a connection that takes every
    write at once, counted (the syscall itself is not in this benchmark)."""

    disconnected = False
    chunked_encoding = True
    response_complete = False
    write_paused = False

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1


async def run(subscribers: int, per_flush: int, rounds: int, direct: bool) -> dict[str, Any]:
    hub = Hub(None, flush_seconds=3600.0)  # flushed by hand below
    stock = parse_channels(["stock"])
    writes = 0
    sink = _Sink()

    async def subscriber(subscription: Subscription) -> None:
        nonlocal writes
        while True:
            events = await subscription.next_batch()
            if events and chunk(hub, events):
                writes += 1

    subscriptions = [
        (await hub.subscribe(stock, STAFF, since=None, transport="sse"))[0]
        for _ in range(subscribers)
    ]
    tasks = [asyncio.create_task(subscriber(s)) for s in subscriptions]
    if direct:  # as `shelfwise serve` does: the flush writes to waiting streams itself
        from shelfwise.http.server_protocol import BodyWriter
        from shelfwise.live.router import _direct_writes

        for subscription in subscriptions:
            _direct_writes(hub, subscription)(BodyWriter(sink, sink, sink))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # every subscriber waiting
    position = 0

    async def one_round() -> None:
        nonlocal position
        for _ in range(per_flush):
            position += 1
            hub.publish([event(position)])
        target = writes + sink.writes + subscribers
        hub.flush()
        while writes + sink.writes < target:  # every subscriber has built this round's chunk
            await asyncio.sleep(0)

    for _ in range(3):  # warm-up
        await one_round()
    writes = sink.writes = 0
    cpu = time.process_time()
    for _ in range(rounds):
        await one_round()
    cpu = time.process_time() - cpu
    writes += sink.writes
    for task in tasks:
        task.cancel()
    per_write = cpu / max(writes, 1)
    return {
        "subscribers": subscribers,
        "direct": direct,
        "events_per_write": per_flush,
        "writes": writes,
        "cpu_us_per_write": round(per_write * 1e6, 2),
        # one flush of every subscriber: the least a flush interval can be at this size
        "cpu_ms_per_flush": round(per_write * subscribers * 1e3, 1),
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--events-per-flush", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--direct",
        action="store_true",
        help="the flush writes each waiting stream's chunk itself (decision 0038), to a sink",
    )
    args = parser.parse_args()
    out = run(args.subscribers, args.events_per_flush, args.rounds, args.direct)
    print(json.dumps(uvloop.run(out)))


if __name__ == "__main__":
    main()
