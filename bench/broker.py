"""Event bus benchmark: publisher throughput with confirms, and commit → consumer lag
while orders run at full speed.

    .venv/bin/python -m bench.broker [--backlog 20000] [--duration 10] [--connections 64]
        [--inbox-batch 50] [--inbox-linger-ms 10] [--database shelfwise_bench_broker]

Needs `rabbitmq-server` (a private node on free ports, as in the tests) and uses a database
of its own in `var/bench` (10,000 products, demo users): on the database other benchmarks
share, one run measured four times the lag of the next, with PostgreSQL using twice the
CPU (their leftovers, millions of outbox rows and expiring reservations, are the suspect).
Two parts:

- publish: a scratch database holding a backlog of already-stamped events; one
  `BrokerPublisher` (batch 500, window 200) sends them to the topic exchange, routed to a
  durable quorum queue; events/s until the last confirm is stored.
- orders: `shelfwise serve` + `shelfwise worker` with SHELFWISE_BROKER_URL; a closed loop of
  `--connections` clients places orders (one line, quantity 1, random product of 10,000,
  unique Idempotency-Key) for `--duration` seconds. Two consumers in this process:
  `all` (every event, plain auto-ack: what the bus itself delivers) and `inbox` (an
  `InboxConsumer` on `order.*`: claim + handle + commit + ack per batch of up to
  `--inbox-batch` messages; 1 = per message). Lag = the time the inbox transaction
  COMMITTED (after_commit) - the event's `created_at` header (its insert, within ms of
  its commit; one clock); for `all`, the receive time.
  The same load also runs once with the broker off, to show the order path does not wait.

Results: bench/results/<timestamp>-broker.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import psutil
import psycopg
import sqlalchemy.event
import uvloop
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bench.issues import BIN, CUSTOMER, login, stop
from bench.loadgen import _read_response, percentile
from bench.servers import (
    ROOT,
    database_url,
    drop_database,
    free_port,
    prepare_seeded,
    scratch_database,
    shelfwise_server,
)
from shelfwise.broker.consumer import ConsumerConfig, InboxConsumer
from shelfwise.broker.envelope import BrokerEvent
from shelfwise.broker.publisher import BrokerPublisher, PublisherConfig
from shelfwise.config import load_settings
from shelfwise.db import open_database
from tests.broker_support import RabbitNode, running_node

RESULTS = ROOT / "bench" / "results"


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round((ordered[-1] if ordered else 0.0) * 1000, 1),
    }


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class CpuMeter:
    """CPU seconds per role (process tree) over a phase: where the machine's time went."""

    def __init__(self, roles: dict[str, int]) -> None:
        self.roles = roles
        self.start = {role: tree_cpu(pid) for role, pid in roles.items()}

    def seconds(self) -> dict[str, float]:
        return {
            role: round(tree_cpu(pid) - self.start[role], 2) for role, pid in self.roles.items()
        }


def postmaster_pid(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    parent = psutil.Process(int(row[0])).parent()
    assert parent is not None
    return int(parent.pid)


# -- part 1: publisher throughput -----------------------------------------------------------


async def publish_backlog(
    url: str, rabbit: RabbitNode, events: int, profile: Path | None = None
) -> dict[str, Any]:
    """Publish `events` stamped events; wall time, and this process's CPU per event (the
    publisher is the only work here: the broker and PostgreSQL are other processes)."""
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, position,"
            " published_at) SELECT 'stock.changed', 'stock_level', g::text,"
            " jsonb_build_object('stock_level_id', g, 'on_hand', 10, 'reserved', 1),"
            " g, clock_timestamp() FROM generate_series(1, %s) AS g",
            (events,),
        )
    exchange = "shelfwise.events.bench"
    amqp = await aio_pika.connect(rabbit.url)
    async with amqp:
        channel = await amqp.channel()
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(
            "bench-all", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(ex, routing_key="#")
        stop_event = asyncio.Event()
        publisher = BrokerPublisher(url, rabbit.url, PublisherConfig(exchange=exchange))
        profiler = _profiler() if profile else None
        started, times = time.perf_counter(), os.times()
        task = asyncio.create_task(publisher.run(stop_event))
        while publisher.position < events:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        user, system = os.times().user - times.user, os.times().system - times.system
        if profiler is not None and profile is not None:
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(40)
            profile.write_text(text.getvalue())
        stop_event.set()
        await task
        await queue.purge()
    return {
        "events": events,
        "seconds": round(elapsed, 2),
        "events_per_s": round(events / elapsed),
        "cpu_seconds": {"user": round(user, 2), "system": round(system, 2)},
        "cpu_us_per_event": round((user + system) / events * 1e6, 1),
        "batch": 500,
        "window": 200,
    }


def _profiler() -> cProfile.Profile:
    profiler = cProfile.Profile(time.process_time)  # CPU, not wall: a busy box preempts
    profiler.enable()
    return profiler


# -- part 2: orders at full speed, lag to consumers -----------------------------------------


async def order_load(
    port: int, token: str, location: str, products: list[str], seconds: float, connections: int
) -> dict[str, Any]:
    """Closed loop: each connection posts an order, waits for the answer, posts the next."""
    rng = random.Random(7)
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    def request() -> bytes:
        body = json.dumps(
            {
                "lines": [{"product_id": rng.choice(products), "quantity": 1}],
                "location_id": location,
            }
        )
        head = (
            f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nIdempotency-Key: {uuid.uuid4().hex}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return (head + body).encode()

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                writer.write(request())
                status, close = await asyncio.wait_for(_read_response(reader), 10)
                latencies.append(time.perf_counter() - sent)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if close:
                    break
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    return {
        "orders_per_s": round(statuses.get("201", 0) / elapsed, 1),
        "statuses": statuses,
        **_summary(latencies),
    }


async def order_load_process(
    port: int,
    token: str,
    location: str,
    products: list[str],
    seconds: float,
    connections: int,
    tmp: Path,
) -> dict[str, Any]:
    """`order_load` in its own process: the consumers measured here must not share an
    event loop (or a GIL) with the load."""
    spec = tmp / f"load-{time.monotonic_ns()}.json"
    spec.write_text(json.dumps({"token": token, "location": location, "products": products}))
    process = await asyncio.create_subprocess_exec(
        str(BIN / "python"),
        "-m",
        "bench.broker",
        "load",
        str(port),
        str(spec),
        str(seconds),
        str(connections),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class Lags:
    def __init__(self) -> None:
        self.values: list[tuple[int, float]] = []  # (position, seconds)
        # Only events written once the measured load started count: a leftover of the
        # run before (stamped late) would measure that run's backlog, not this lag.
        self.since = datetime.max.replace(tzinfo=UTC)
        self.at: dict[int, datetime] = {}  # position -> when it arrived

    def add(self, position: int, created_at: datetime | None) -> None:
        now = datetime.now(UTC)
        self.at.setdefault(position, now)
        if created_at is not None and created_at >= self.since:
            self.values.append((position, (now - created_at).total_seconds()))


def stages(url: str, lags: Lags, after: int, end: int) -> dict[str, Any]:
    """Where the lag goes, per event of the window: written → stamped by the relay
    (`published_at`), stamped → received from the broker (the publisher's fetch, send
    and confirm, the broker, the delivery)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT position, created_at, published_at FROM outbox_events"
            " WHERE position > %s AND position <= %s",
            (after, end),
        ).fetchall()
    relay, publisher = [], []
    for position, created, stamped in rows:
        received = lags.at.get(int(position))
        if received is None or stamped is None or created < lags.since:
            continue
        relay.append((stamped - created).total_seconds())
        publisher.append((received - stamped).total_seconds())
    return {"written_to_stamped": _summary(relay), "stamped_to_received": _summary(publisher)}


async def orders_part(
    url: str, rabbit: RabbitNode, args: argparse.Namespace, tmp: Path
) -> dict[str, Any]:
    exchange = "shelfwise.events"
    env = {"SHELFWISE_RATE_LIMIT_ENABLED": "false"}
    server = shelfwise_server(url, free_port(), tmp / "serve.log", log_json=True, extra_env=env)
    server.start()
    server.wait_ready()
    out: dict[str, Any] = {}
    postgres = postmaster_pid(url)
    assert server.process is not None
    serve_pid = server.process.pid
    try:
        token = login(server.port, CUSTOMER)
        with psycopg.connect(url) as conn:
            location = str(
                conn.execute("SELECT id FROM locations WHERE code = 'WH-NORTH'").fetchone()[0]
            )
            products = [str(r[0]) for r in conn.execute("SELECT id FROM products LIMIT 10000")]
        plain = start_broker_worker(url, None, tmp / "worker-plain.log")  # relay only
        try:
            await _settled(url)  # seeding's backlog stamped and fanned out, as in steady state
            cpu = CpuMeter(
                {
                    "serve": serve_pid,
                    "worker": plain.pid,
                    "postgres": postgres,
                    "bench": os.getpid(),
                }
            )
            out["broker_off"] = await order_load_process(
                server.port, token, location, products, args.duration, args.connections, tmp
            )
            out["broker_off"]["cpu_seconds"] = cpu.seconds()
            await _settled(url)  # the relay stamps the tail: nothing left for the next run
        finally:
            stop(plain)
        print(f"  orders, broker off: {json.dumps(out['broker_off'])}", flush=True)

        all_lags, inbox_lags = Lags(), Lags()
        amqp = await aio_pika.connect(rabbit.url)
        channel = await amqp.channel()
        await channel.set_qos(prefetch_count=500)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(
            f"bench-all-{uuid.uuid4().hex[:6]}",
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        await queue.bind(ex, routing_key="#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            created = message.headers.get("created_at")
            position = int(str(message.headers.get("position", 0)))
            if isinstance(created, str):
                all_lags.add(position, datetime.fromisoformat(created))
            await message.ack()

        await queue.consume(on_message)
        db = open_database(load_settings(database_url=url), url)

        async def inbox_handler(session: AsyncSession, event: BrokerEvent) -> None:
            def committed(_: Session) -> None:  # processed = committed, not just handled
                inbox_lags.add(event.position, event.created_at)

            sqlalchemy.event.listen(session.sync_session, "after_commit", committed, once=True)

        stop_event = asyncio.Event()
        consumer = InboxConsumer(
            db.sessions,
            rabbit.url,
            ConsumerConfig(
                queue=f"bench-orders-{uuid.uuid4().hex[:6]}",
                patterns=("order.*",),
                batch_size=args.inbox_batch,
                batch_linger=args.inbox_linger_ms / 1000,
            ),
            inbox_handler,
        )
        consuming = asyncio.create_task(consumer.run(stop_event))
        await asyncio.wait_for(consumer.consuming.wait(), 20)
        with psycopg.connect(url) as conn:
            start_position = int(
                conn.execute("SELECT coalesce(max(position), 0) FROM outbox_events").fetchone()[0]
            )
        # Publish from the current end: var/bench's seeding left tens of thousands of
        # events that a fresh publisher would otherwise send first (as it should in real
        # life: everything retained in the outbox), which is not what is measured here.
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO broker_publisher_positions (exchange, position) VALUES (%s, %s)"
                " ON CONFLICT (exchange) DO UPDATE SET position = excluded.position",
                (exchange, start_position),
            )
        linger = args.publisher_linger_ms
        extra = {} if linger is None else {"SHELFWISE_BROKER_PUBLISHER_LINGER_MS": str(linger)}
        worker = start_broker_worker(url, rabbit.url, tmp / "worker.log", extra)
        try:
            await _wait_connected(url, exchange)
            all_lags.since = inbox_lags.since = datetime.now(UTC)
            cpu = CpuMeter(
                {
                    "serve": serve_pid,
                    "worker": worker.pid,
                    "postgres": postgres,
                    "rabbitmq": rabbit.pid,
                    "bench": os.getpid(),  # the two consumers
                }
            )
            out["broker_on"] = await order_load_process(
                server.port, token, location, products, args.duration, args.connections, tmp
            )
            out["broker_on"]["cpu_seconds"] = cpu.seconds()
            print(f"  orders, broker on:  {json.dumps(out['broker_on'])}", flush=True)
            with psycopg.connect(url) as conn:
                end = int(
                    conn.execute("SELECT coalesce(max(position), 0) FROM outbox_events").fetchone()[
                        0
                    ]
                )
            with psycopg.connect(url) as conn:
                orders_total = int(
                    conn.execute(
                        "SELECT count(*) FROM outbox_events"
                        " WHERE position > %s AND position <= %s AND type LIKE 'order.%%'"
                        " AND created_at >= %s",
                        (start_position, end, inbox_lags.since),
                    ).fetchone()[0]
                )
            drained = time.perf_counter() + 90
            while time.perf_counter() < drained and (
                max((p for p, _ in all_lags.values), default=0) < end
                or sum(1 for p, _ in inbox_lags.values if p > start_position) < orders_total
            ):
                await asyncio.sleep(0.1)
        finally:
            stop(worker)
            stop_event.set()
            await consuming
            await db.dispose()
            await amqp.close()
        window = [lag for p, lag in all_lags.values if p > start_position]
        inbox = [lag for p, lag in inbox_lags.values if p > start_position]
        out["events_in_window"] = len(window)
        out["events_per_s"] = round(len(window) / args.duration, 1)
        out["lag_all_events_autoack"] = _summary(window)
        out["lag_inbox_consumer_order_events"] = _summary(inbox)
        out["inbox_batch"] = {"size": args.inbox_batch, "linger_ms": args.inbox_linger_ms}
        out["publisher_linger_ms"] = args.publisher_linger_ms  # None: the setting's default
        out["lag_stages_all_events"] = stages(url, all_lags, start_position, end)
        out["order_events_in_window"] = orders_total
        out["stream_end_position"] = end
        out["last_received_position"] = max((p for p, _ in all_lags.values), default=0)
    finally:
        server.stop()
    return out


def start_broker_worker(
    url: str, broker_url: str | None, log: Path, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(
            [str(BIN / "shelfwise"), "worker", "--metrics-port", str(free_port())],
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={
                **os.environ,
                "DATABASE_URL": url,
                "SHELFWISE_ENV": "development",
                "SHELFWISE_LOG_JSON": "true",
                **({"SHELFWISE_BROKER_URL": broker_url} if broker_url else {}),
                **(extra or {}),
            },
        )


async def _settled(url: str) -> None:
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM outbox_events WHERE position IS NULL")
            waiting = row.fetchone()
        if waiting and waiting[0] == 0:
            await asyncio.sleep(5)  # what follows the stamping (webhook fan-out) settles too
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("the relay did not stamp the backlog")


async def _wait_connected(url: str, exchange: str) -> None:
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT connected FROM broker_publisher_positions WHERE exchange = %s", (exchange,)
            ).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the worker's publisher did not connect")


def load_main(argv: list[str]) -> int:
    port, spec_path, seconds, connections = argv
    spec = json.loads(Path(spec_path).read_text())
    result = uvloop.run(
        order_load(
            int(port),
            spec["token"],
            spec["location"],
            spec["products"],
            float(seconds),
            int(connections),
        )
    )
    result["load_cpu_seconds"] = round(time.process_time(), 2)  # the load generator's own
    print(json.dumps(result))
    return 0


def main() -> int:
    if sys.argv[1:2] == ["load"]:
        return load_main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=20_000, help="0: skip the publish part")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--inbox-batch", type=int, default=50, help="1: commit per message")
    parser.add_argument("--inbox-linger-ms", type=float, default=10.0)
    parser.add_argument(
        "--publish-only", action="store_true", help="only part 1 (publisher throughput, CPU)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile of part 1 (by own time)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--publisher-linger-ms", type=float, default=None, help="the worker's (default: setting)"
    )
    parser.add_argument("--database", default="shelfwise_bench_broker")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "stamp": stamp,
        "args": vars(args),
        "loadavg_start": os.getloadavg(),
    }
    print("preparing var/bench ...", flush=True)
    url, _, _ = prepare_seeded(10_000, args.database)
    server = database_url(url, "postgres")
    with running_node() as rabbit:
        name, scratch = scratch_database(server, "bench_broker_")
        try:
            print("== publish", flush=True)
            if args.backlog <= 0:
                raise _SkipPublish
            profile = RESULTS / f"{stamp}-broker-publish-profile.txt" if args.profile else None
            publishing = publish_backlog(scratch, rabbit, args.backlog, profile)
            # `shelfwise worker` runs on asyncio's own loop; uvloop measured for comparison.
            results["publish"] = (
                uvloop.run(publishing) if args.loop == "uvloop" else asyncio.run(publishing)
            )
            results["publish"]["loop"] = args.loop
            print(f"  {json.dumps(results['publish'])}", flush=True)
        except _SkipPublish:
            pass
        finally:
            drop_database(server, name)
        if args.publish_only:
            return _write(results, stamp)
        print("== orders", flush=True)
        tmp = RESULTS / f"{stamp}-broker-logs"
        tmp.mkdir()
        results["orders"] = asyncio.run(orders_part(url, rabbit, args, tmp))
        print(f"  {json.dumps(results['orders'])}", flush=True)
    return _write(results, stamp)


class _SkipPublish(Exception):
    """--backlog 0: the orders part only."""


def _write(results: dict[str, Any], stamp: str) -> int:
    results["loadavg_end"] = os.getloadavg()
    out = RESULTS / f"{stamp}-broker.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
