"""The publisher's CPU per event at the order path's shape: many small relay commits.

    .venv/bin/python -m bench.broker_trickle [--rate 200] [--seconds 10] [--lingers none,0,20]

One process runs a writer (one event per commit, then the relay's doorbell, at `--rate`
commits/s), the relay and — unless the variant is `none` — a `BrokerPublisher` with the
given linger (ms), against a private RabbitMQ node and a scratch database on `var/bench`'s
server. CPU = this process's user + system time from the first write until the publisher
confirmed the last event (`none`: until the relay stamped it). `none` is the baseline:
the publisher's own cost is a variant's figure minus it. About 20 s per variant.

Results: bench/results/<timestamp>-broker-trickle.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import psycopg

from bench.broker import RESULTS
from bench.servers import database_url, drop_database, prepare_database, scratch_database
from shelfwise.broker.publisher import BrokerPublisher, PublisherConfig
from shelfwise.events.doorbell import OUTBOX_CHANNEL
from shelfwise.events.relay import Relay, RelayConfig
from tests.broker_support import RabbitNode, running_node

EXCHANGE = "shelfwise.events.trickle"
INSERT_SQL = (
    "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload)"
    " VALUES ('stock.changed', 'stock_level', '1', '{\"on_hand\": 1}')"
)


async def trickle(
    url: str, rabbit: RabbitNode, linger_ms: float | None, rate: float, seconds: float
) -> dict[str, Any]:
    amqp = await aio_pika.connect(rabbit.url)
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(
        "trickle-all", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(exchange, routing_key="#")
    stop = asyncio.Event()
    tasks = [asyncio.create_task(Relay(url, RelayConfig()).run(stop))]
    publisher = BrokerPublisher(
        url, rabbit.url, PublisherConfig(exchange=EXCHANGE, linger=(linger_ms or 0) / 1000)
    )
    if linger_ms is not None:
        tasks.append(asyncio.create_task(publisher.run(stop)))
        while not publisher.active:
            await asyncio.sleep(0.05)
    writer = await psycopg.AsyncConnection.connect(url, autocommit=True)
    started, times, written = time.perf_counter(), os.times(), 0
    while time.perf_counter() - started < seconds:
        await writer.execute(INSERT_SQL)
        await writer.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        written += 1
        await asyncio.sleep(max(0.0, written / rate - (time.perf_counter() - started)))
    while not await _done(writer, publisher, linger_ms, written):
        await asyncio.sleep(0.01)
    used = os.times()
    cpu = (used.user - times.user) + (used.system - times.system)
    stop.set()
    await asyncio.gather(*tasks)
    await writer.close()
    await queue.delete(if_unused=False, if_empty=False)
    await amqp.close()
    return {
        "linger_ms": linger_ms,
        "events": written,
        "cpu_seconds": round(cpu, 2),
        "cpu_us_per_event": round(cpu / written * 1e6),
    }


async def _done(
    writer: psycopg.AsyncConnection[Any],
    publisher: BrokerPublisher,
    linger_ms: float | None,
    written: int,
) -> bool:
    if linger_ms is not None:
        return publisher.position >= written
    cur = await writer.execute("SELECT count(*) FROM outbox_events WHERE position IS NULL")
    row = await cur.fetchone()
    return bool(row and row[0] == 0)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=200.0, help="commits (events) per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--lingers", default="none,0,20", help="'none' = no publisher")
    args = parser.parse_args()
    variants = [None if v == "none" else float(v) for v in args.lingers.split(",")]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {"stamp": stamp, "args": vars(args), "loadavg_start": os.getloadavg()}
    url, _ = prepare_database(10_000)
    server = database_url(url, "postgres")
    runs = []
    with running_node() as rabbit:
        for linger in variants:
            name, scratch = scratch_database(server, "bench_broker_")
            try:
                run = asyncio.run(trickle(scratch, rabbit, linger, args.rate, args.seconds))
            finally:
                drop_database(server, name)
            print(f"  {json.dumps(run)}", flush=True)
            runs.append(run)
    results["runs"] = runs
    results["loadavg_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}-broker-trickle.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
