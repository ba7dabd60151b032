"""Outbox relay throughput: how fast one relay stamps a backlog of committed events.

    .venv/bin/python -m bench.relay [EVENTS] [BATCH]

Uses a scratch database on the embedded test server (or TEST_DATABASE_URL) and drops it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import psycopg

from bench.servers import drop_database, scratch_database
from shelfwise.embedded import start_embedded
from shelfwise.events.relay import Relay, RelayConfig

ROOT = Path(__file__).resolve().parents[1]


async def measure(url: str, events: int, batch: int) -> float:
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload)"
            " SELECT 'stock.changed', 'stock_level', g::text, jsonb_build_object('n', g)"
            " FROM generate_series(1, %s) AS g",
            (events,),
        )
    stop = asyncio.Event()
    relay = asyncio.create_task(Relay(url, RelayConfig(batch_size=batch)).run(stop))
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT 1 FROM outbox_events WHERE position IS NULL LIMIT 1").fetchone():
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    stop.set()
    await relay
    return elapsed


def main() -> None:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    server = os.environ.get("TEST_DATABASE_URL") or start_embedded(
        ROOT / "var" / "test", database="postgres"
    )
    name, url = scratch_database(server, "bench_relay_")
    try:
        elapsed = asyncio.run(measure(url, events, batch))
        print(f"{events} events, batch {batch}: {elapsed:.2f} s, {events / elapsed:,.0f} events/s")
    finally:
        drop_database(server, name)


if __name__ == "__main__":
    main()
