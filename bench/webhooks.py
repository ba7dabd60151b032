"""Webhook delivery throughput and end-to-end latency to a local receiver.

    python -m bench.webhooks [--events 2000] [--subscriptions 1 --subscriptions 5]
                             [--paced-rate 20] [--paced-seconds 15] [--concurrency N]
                             [--deadline 180]

A fresh database `shelfwise_bench_webhooks` on the benchmark cluster (`var/bench`, never
the development or test one), migrated; `shelfwise worker` (relay + fan-out + delivery
jobs) as a child process, exactly as deployed, with `127.0.0.1/32` allow-listed for the
SSRF check; and a minimal HTTP/1.1 receiver on 127.0.0.1 (raw asyncio, in this process)
that checks every signature and notes when each (subscription, event) arrived.

For each subscription count, two runs:

- burst: EVENTS events committed in one transaction, the way a bulk import or a busy
  minute lands. Deliveries/s = deliveries / (last arrival - commit). Latency here is
  mostly queueing, so its p50 is about half the drain time.
- paced: events committed one per transaction at PACED_RATE/s for PACED_SECONDS. Latency
  (commit -> receiver got it) is what one event sees when the system keeps up; it is
  split into commit -> published (the relay) and published -> received (fan-out, job
  pick-up, HTTP).

Each run stops waiting at DEADLINE seconds and reports what arrived. Results go to
bench/results/<timestamp>-webhooks.json. Wrap runs in `flock /tmp/shelfwise-bench.lock`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import text

from bench.issues import stop
from bench.loadgen import percentile
from bench.run import machine_busy_seconds
from bench.servers import BIN, DATA_DIR, ROOT, cluster_cpu_seconds, free_port

RESULTS = ROOT / "bench" / "results"
DATABASE = "shelfwise_bench_webhooks"
EVENT_TYPE = "product.updated"
INSERT_SQL = """
WITH inserted AS (
    INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload)
    SELECT %(type)s, 'product', g::text, jsonb_build_object('n', g, 'bench', true)
      FROM generate_series(1, %(count)s) AS g
    RETURNING id
)
SELECT id, pg_notify('shelfwise_outbox', '') IS NULL FROM inserted
"""


@dataclass
class Receiver:
    """HTTP/1.1, one request per connection (the sender opens a client per attempt)."""

    secrets: dict[int, str] = field(default_factory=dict)  # subscription index -> secret
    arrivals: dict[tuple[int, int], float] = field(default_factory=dict)
    bad_signatures: int = 0
    requests: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            arrived = time.time()
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            index = int(path.rsplit("/", 1)[1])
            self.requests += 1
            if not self._signed(headers.get("shelfwise-signature", ""), self.secrets[index], body):
                self.bad_signatures += 1
            self.arrivals.setdefault((index, int(headers["shelfwise-event-id"])), arrived)
            self.changed.set()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError):
            pass
        finally:
            writer.close()

    @staticmethod
    def _signed(header: str, secret: str, body: bytes) -> bool:
        parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
        stamp = next((v for k, v in parts if k == "t"), "")
        mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        return any(hmac.compare_digest(mac, v) for k, v in parts if k == "v1")

    async def wait_for(self, keys: set[tuple[int, int]], deadline: float) -> bool:
        while not keys.issubset(self.arrivals.keys()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 1.0))
        return True


def fresh_database() -> str:
    from shelfwise.embedded import start_embedded
    from shelfwise.migrate import upgrade

    admin = start_embedded(DATA_DIR, database="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = start_embedded(DATA_DIR, database=DATABASE)
    upgrade(url)
    return url


def start_worker(url: str, log: Path, concurrency: int | None) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SHELFWISE_ENV": "development",
        "SHELFWISE_LOG_JSON": "true",
        "SHELFWISE_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.1/32"]',
    }
    if concurrency:
        env["SHELFWISE_WORKER_CONCURRENCY"] = str(concurrency)
    with log.open("wb") as fh:
        return subprocess.Popen(
            [str(BIN / "shelfwise"), "worker", "--metrics-port", str(free_port())],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


async def subscribe(url: str, port: int, count: int, receiver: Receiver) -> None:
    """Replace all subscriptions by `count` new ones, each on its own receiver path."""
    from shelfwise.config import load_settings
    from shelfwise.db import open_database
    from shelfwise.webhooks import service

    db = open_database(load_settings(database_url=url), url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("DELETE FROM webhook_subscriptions"))
        receiver.secrets.clear()
        for index in range(count):
            async with db.sessions() as session:
                sub = await service.create_subscription(
                    session, url=f"http://127.0.0.1:{port}/hook/{index}", event_types=["*"]
                )
            receiver.secrets[index] = sub.secret
    finally:
        await db.dispose()


async def commit_events(conn: psycopg.AsyncConnection[Any], count: int) -> tuple[list[int], float]:
    async with conn.transaction():
        cur = await conn.execute(INSERT_SQL, {"type": EVENT_TYPE, "count": count})
        ids = [int(row[0]) for row in await cur.fetchall()]
    return ids, time.time()


async def published_at(conn: psycopg.AsyncConnection[Any], ids: list[int]) -> dict[int, float]:
    cur = await conn.execute(
        "SELECT id, extract(epoch FROM published_at)::float8 FROM outbox_events"
        " WHERE id = ANY(%s) AND published_at IS NOT NULL",
        (ids,),
    )
    return {int(i): float(t) for i, t in await cur.fetchall()}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(1000 * percentile(ordered, 0.50), 1),
        "p99_ms": round(1000 * percentile(ordered, 0.99), 1),
        "max_ms": round(1000 * (ordered[-1] if ordered else 0.0), 1),
    }


async def measure(
    url: str,
    receiver: Receiver,
    subs: int,
    schedule: list[int],
    interval: float,
    deadline_s: float,
) -> dict[str, Any]:
    """Commit events (`schedule[i]` of them, `interval` s apart); wait for every delivery."""
    committed: dict[int, float] = {}
    busy0, db0, t0 = machine_busy_seconds(), cluster_cpu_seconds(), time.monotonic()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        first = time.time()
        start = time.monotonic()
        for i, count in enumerate(schedule):
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
            ids, at = await commit_events(conn, count)
            committed.update(dict.fromkeys(ids, at))
        keys = {(s, e) for s in range(subs) for e in committed}
        complete = await receiver.wait_for(keys, time.monotonic() + deadline_s)
        published = await published_at(conn, list(committed))
    wall = time.monotonic() - t0
    arrived = {k: receiver.arrivals[k] for k in keys if k in receiver.arrivals}
    last = max(arrived.values(), default=first)
    end_to_end = [t - committed[e] for (_, e), t in arrived.items()]
    relay = [published[e] - committed[e] for e in committed if e in published]
    after_publish = [t - published[e] for (_, e), t in arrived.items() if e in published]
    return {
        "subscriptions": subs,
        "events": len(committed),
        "deliveries_expected": len(keys),
        "deliveries_received": len(arrived),
        "complete": complete,
        "drain_s": round(last - first, 2),
        "deliveries_per_s": round(len(arrived) / max(last - first, 1e-9), 1),
        "commit_to_received": summary(end_to_end),
        "commit_to_published": summary(relay),
        "published_to_received": summary(after_publish),
        "bad_signatures": receiver.bad_signatures,
        "db_cpu_pct": round(100 * (cluster_cpu_seconds() - db0) / wall),
        "machine_busy_pct_of_one_core": round(100 * (machine_busy_seconds() - busy0) / wall),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


async def warm_up(url: str, receiver: Receiver, deadline_s: float) -> None:
    """One event end to end: the worker is up, its relay active, its fan-out idle."""
    result = await measure(url, receiver, len(receiver.secrets), [1], 0.0, deadline_s)
    if not result["complete"]:
        raise RuntimeError("the worker did not deliver the warm-up event; see its log")


async def run(args: argparse.Namespace, url: str, stamp: str) -> dict[str, Any]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, backlog=1024)
    port = int(server.sockets[0].getsockname()[1])
    worker = start_worker(url, RESULTS / f"{stamp}-worker-webhooks.log", args.concurrency)
    runs: list[dict[str, Any]] = []
    try:
        for subs in args.subscriptions:
            await subscribe(url, port, subs, receiver)
            await warm_up(url, receiver, 60.0)
            burst = await measure(url, receiver, subs, [args.events], 0.0, args.deadline)
            runs.append({"mode": "burst", **burst})
            print_run(runs[-1])
            ticks = max(1, round(args.paced_rate * args.paced_seconds))
            paced = await measure(
                url, receiver, subs, [1] * ticks, 1.0 / args.paced_rate, args.deadline
            )
            runs.append({"mode": f"paced {args.paced_rate:g}/s", **paced})
            print_run(runs[-1])
    finally:
        stop(worker)
        server.close()
        await server.wait_closed()
    return {"runs": runs, "requests_received": receiver.requests}


def print_run(r: dict[str, Any]) -> None:
    e2e, relay, rest = r["commit_to_received"], r["commit_to_published"], r["published_to_received"]
    print(
        f"{r['mode']:>12}  subs={r['subscriptions']}  events={r['events']}"
        f"  delivered={r['deliveries_received']}/{r['deliveries_expected']}"
        f"  {r['deliveries_per_s']:,.0f} deliveries/s  in {r['drain_s']} s"
        f"  commit->received p50 {e2e['p50_ms']} ms p99 {e2e['p99_ms']} ms"
        f"  (relay p50 {relay['p50_ms']} ms; published->received p50 {rest['p50_ms']}"
        f" p99 {rest['p99_ms']} ms)  bad_sig={r['bad_signatures']}"
        f"  load1={r['loadavg_1m']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--subscriptions", type=int, action="append")
    parser.add_argument("--paced-rate", type=float, default=20.0)
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=None, help="worker_concurrency")
    parser.add_argument("--deadline", type=float, default=180.0, help="max wait per run (s)")
    args = parser.parse_args()
    args.subscriptions = args.subscriptions or [1, 5]
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    url = fresh_database()
    result = asyncio.run(run(args, url, stamp))
    result |= {
        "stamp": stamp,
        "args": vars(args),
        "cpus": os.cpu_count(),
        "note": "wall-clock figures; check loadavg_1m for other work on the machine",
    }
    out = RESULTS / f"{stamp}-webhooks.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
