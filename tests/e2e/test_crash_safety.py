"""Crash safety: `kill -9` the server in the middle of a burst of orders.

An order is one transaction: its row, its lines, the stock reservation, the ledger rows,
the idempotency record and the outbox event commit together or not at all. A server that
dies mid-burst (SIGKILL: no shutdown, no rollback by the app; PostgreSQL aborts whatever
its connections had open) must leave no half-written order and no reserved unit without
an order, and the ledger must still reconcile. Clients that saw their connection drop
retry with the same Idempotency-Key against the restarted server and end with exactly one
order each — whether or not their first attempt had committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from shelfwise.config import Environment, Settings
from shelfwise.db import open_database
from shelfwise.reconciliation import reconcile_all
from tests.support import PASSWORD, wait_until

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
STARTUP_TIMEOUT = 30.0
CONNECTIONS = 20
PER_CONNECTION = 15  # up to 300 requests; the server dies long before they are all sent
KILL_AFTER_ORDERS = 40
STOCK = 5_000
EMAIL = "crash-staff@example.test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str


@dataclass
class Servers:
    """Starts `shelfwise serve` processes on one database; kills leftovers at the end."""

    database_url: str
    workdir: Path
    started: list[ServerProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "SHELFWISE_ENV": Environment.TEST.value,
            "SHELFWISE_DATA_DIR": str(self.workdir),
            "SHELFWISE_LOG_JSON": "true",
            # The test server is shared (max_connections=100): stay small.
            "SHELFWISE_DB_POOL_SIZE": "5",
            "SHELFWISE_DB_MAX_OVERFLOW": "5",
            "SHELFWISE_DB_POOL_TIMEOUT_SECONDS": "30",
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(SHELFWISE), *args],
            cwd=self.workdir,  # no stray .env is picked up
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    async def start(self) -> ServerProcess:
        port = free_port()
        log = (self.workdir / f"server-{len(self.started)}.log").open("wb")
        with log:
            process = subprocess.Popen(
                [str(SHELFWISE), "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(process, f"http://127.0.0.1:{port}")
        self.started.append(server)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as client:

            async def ready() -> bool:
                assert process.poll() is None, f"server exited early with {process.returncode}"
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what="/readyz")
        return server

    def stop_all(self) -> None:
        for server in self.started:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait(timeout=15)

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.workdir.glob("server-*.log"))
        )


@pytest.fixture
def servers(database_url: str, tmp_path: Path) -> Iterator[Servers]:
    group = Servers(database_url, tmp_path)
    try:
        yield group
    finally:
        group.stop_all()


@dataclass
class Attempt:
    key: str
    body: dict[str, Any]
    status: int | None = None  # None: no response (connection refused, reset, ...)
    order_id: str | None = None
    error: str | None = None


async def scalar(conn: psycopg.AsyncConnection[Any], query: str) -> Any:
    cursor = await conn.execute(query)
    row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def rows(conn: psycopg.AsyncConnection[Any], query: str) -> list[tuple[Any, ...]]:
    cursor = await conn.execute(query)
    return list(await cursor.fetchall())


async def assert_nothing_half_written(conn: psycopg.AsyncConnection[Any]) -> int:
    """Every committed order is whole; returns how many orders exist."""
    orders = await scalar(conn, "SELECT count(*) FROM orders")
    # Every order has lines ...
    assert (
        await rows(
            conn,
            "SELECT o.id FROM orders o "
            "WHERE NOT EXISTS (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)",
        )
        == []
    )
    # ... every line of every order its `reserve` ledger row, to the unit ...
    assert (
        await rows(
            conn,
            "SELECT l.order_id, l.id FROM order_lines l WHERE NOT EXISTS ("
            "  SELECT 1 FROM stock_movements m WHERE m.order_id = l.order_id"
            "  AND m.kind = 'reserve' AND m.stock_level_id = l.stock_level_id"
            "  AND m.reserved_delta = l.quantity)",
        )
        == []
    )
    # ... and no reservation in the ledger belongs to an order that is not there whole.
    assert (
        await rows(
            conn,
            "SELECT m.id FROM stock_movements m WHERE m.kind = 'reserve' AND NOT EXISTS ("
            "  SELECT 1 FROM order_lines l WHERE l.order_id = m.order_id"
            "  AND l.stock_level_id = m.stock_level_id)",
        )
        == []
    )
    # The idempotency record and the outbox event committed with each order, and only then.
    assert (
        await scalar(conn, "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'crash-%'")
        == orders
    )
    assert (
        await rows(
            conn,
            "SELECT o.id, r.key FROM orders o "
            "FULL JOIN (SELECT * FROM idempotency_keys WHERE key LIKE 'crash-%') r "
            "ON (r.response_body->>'id')::uuid = o.id WHERE o.id IS NULL OR r.key IS NULL",
        )
        == []
    )
    assert (
        await rows(
            conn,
            "SELECT o.id, e.id FROM orders o "
            "FULL JOIN (SELECT * FROM outbox_events WHERE type = 'order.reserved') e "
            "ON e.aggregate_id = o.id::text "
            "WHERE o.id IS NULL OR e.id IS NULL",
        )
        == []
    )
    # Nothing but these orders holds stock: reserved == the lines of reserved orders.
    assert (
        await rows(
            conn,
            "SELECT s.id, s.reserved, coalesce(sum(l.quantity), 0) FROM stock_levels s "
            "LEFT JOIN order_lines l ON l.stock_level_id = s.id "
            "LEFT JOIN orders o ON o.id = l.order_id AND o.status = 'reserved' "
            "GROUP BY s.id HAVING s.reserved <> coalesce(sum(l.quantity) "
            "FILTER (WHERE o.id IS NOT NULL), 0)",
        )
        == []
    )
    return int(orders)


async def reconciles(database_url: str) -> bool:
    config = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env=Environment.TEST,
        database_url=database_url,
        db_pool_size=1,
        db_max_overflow=0,
    )
    db = open_database(config, database_url)
    try:
        async with db.sessions() as session:
            report = await reconcile_all(session)
    finally:
        await db.dispose()
    assert report.clean, report
    return report.clean


async def test_kill_9_mid_burst_leaves_no_half_written_order(
    servers: Servers, database_url: str
) -> None:
    created = servers.cli("create-user", EMAIL, "--role", "staff", "--password", PASSWORD)
    assert created.returncode == 0, created.stdout + created.stderr
    first = await servers.start()

    async with httpx.AsyncClient(base_url=first.base_url, timeout=10.0) as client:
        login = await client.post("/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        location = await client.post(
            "/v1/locations", json={"code": "CRASH-1", "name": "Crash test"}, headers=auth
        )
        assert location.status_code == 201, location.text
        products = []
        for i in range(3):
            product = await client.post(
                "/v1/products",
                json={
                    "sku": f"CRASH-{i}",
                    "name": f"Crash product {i}",
                    "category": "e2e",
                    "price_minor": 500 + i,
                    "currency": "EUR",
                },
                headers=auth,
            )
            assert product.status_code == 201, product.text
            products.append(product.json()["id"])
            receipt = await client.post(
                "/v1/stock/adjustments",
                json={
                    "product_id": products[-1],
                    "location_id": location.json()["id"],
                    "kind": "receipt",
                    "quantity": STOCK,
                    "reason": "crash test stock",
                },
                headers=auth,
            )
            assert receipt.status_code == 201, receipt.text

    def body(n: int) -> dict[str, Any]:
        # One to three lines, in varying product order.
        chosen = [products[(n + k) % 3] for k in range(1 + n % 3)]
        return {
            "lines": [{"product_id": p, "quantity": 1 + (n + k) % 3} for k, p in enumerate(chosen)]
        }

    attempts = [
        [
            Attempt(f"crash-{c}-{i}-{uuid.uuid4().hex[:8]}", body(c * PER_CONNECTION + i))
            for i in range(PER_CONNECTION)
        ]
        for c in range(CONNECTIONS)
    ]
    watcher = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    blocker = await psycopg.AsyncConnection.connect(database_url)
    try:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        async with httpx.AsyncClient(
            base_url=first.base_url, timeout=10.0, limits=limits
        ) as client:

            async def worker(queue: list[Attempt]) -> None:
                for attempt in queue:
                    headers = {**auth, "Idempotency-Key": attempt.key}
                    try:
                        response = await client.post(
                            "/v1/orders", json=attempt.body, headers=headers
                        )
                    except httpx.TransportError as exc:
                        attempt.error = type(exc).__name__
                        continue
                    attempt.status = response.status_code
                    if response.status_code == 201:
                        attempt.order_id = response.json()["id"]

            workers = [asyncio.create_task(worker(queue)) for queue in attempts]
            try:

                async def enough_orders() -> bool:
                    return await scalar(watcher, "SELECT count(*) FROM orders") >= KILL_AFTER_ORDERS

                await wait_until(enough_orders, timeout=60, interval=0.01, what="orders to commit")

                # Make sure the kill lands mid-transaction: lock the last level in lock
                # order, so that a multi-line order reserves its other lines (written, not
                # committed) and then waits on this one. (Only one can: the others queue
                # behind it for the first levels, before writing anything.)
                await blocker.execute(
                    "SELECT id FROM stock_levels WHERE product_id = ANY(%s) "
                    "ORDER BY id DESC LIMIT 1 FOR UPDATE",
                    ([uuid.UUID(p) for p in products],),
                )

                async def half_written() -> bool:
                    cursor = await watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() "
                        "AND application_name IN ('shelfwise', 'shelfwise-driver') "
                        "AND backend_xid IS NOT NULL AND %s = ANY(pg_blocking_pids(pid))",
                        (blocker.info.backend_pid,),
                    )
                    row = await cursor.fetchone()
                    return row is not None and row[0] >= 1

                await wait_until(half_written, timeout=30, what="orders caught half-written")
                first.process.send_signal(signal.SIGKILL)
                first.process.wait(timeout=15)
                await blocker.rollback()  # the orphaned transactions go on, and roll back
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()

        flat = [a for queue in attempts for a in queue]
        answered = [a for a in flat if a.status is not None]
        unanswered = [a for a in flat if a.status is None]
        # Before the kill, every answer was a success; after it, only connection errors.
        assert {a.status for a in answered} == {201}, [a.status for a in answered]
        assert len(answered) >= 1
        assert unanswered, "the kill should have cut off some requests"
        assert first.process.returncode == -signal.SIGKILL

        # PostgreSQL rolls back what the dead server's connections had open; wait until
        # they are gone, so nothing of the old process still holds a lock.
        async def old_connections_gone() -> bool:
            return (
                await scalar(
                    watcher,
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'shelfwise%'",
                )
                == 0
            )

        await wait_until(old_connections_gone, timeout=30, what="the dead server's sessions")

        after_crash = await assert_nothing_half_written(watcher)
        # Responses lost in flight: committed, but the client never heard of it.
        assert after_crash >= len(answered)
        assert await reconciles(database_url)

        second = await servers.start()
        reconcile = servers.cli("reconcile")
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr

        # Clients that got no answer retry with the same key: exactly one order each.
        async with httpx.AsyncClient(
            base_url=second.base_url, timeout=10.0, limits=limits
        ) as client:

            async def retry(attempt: Attempt) -> httpx.Response:
                headers = {**auth, "Idempotency-Key": attempt.key}
                return await client.post("/v1/orders", json=attempt.body, headers=headers)

            retried = await asyncio.gather(*(retry(a) for a in unanswered))
        assert {r.status_code for r in retried} == {201}, [
            r.text for r in retried if r.status_code != 201
        ]
        replayed = sum(r.headers["Idempotent-Replayed"] == "true" for r in retried)
        # The committed-but-unanswered ones are replayed, the rest are placed now.
        assert replayed == after_crash - len(answered)
        for attempt, response in zip(unanswered, retried, strict=True):
            attempt.order_id = response.json()["id"]

        total = await assert_nothing_half_written(watcher)
        assert total == len(flat)
        order_ids = {a.order_id for a in flat}
        assert len(order_ids) == len(flat)
        assert {str(r[0]) for r in await rows(watcher, "SELECT id FROM orders")} == order_ids
        assert await reconciles(database_url)
        print(
            f"answered before the kill: {len(answered)}, cut off: {len(unanswered)}, "
            f"committed at the kill: {after_crash}, replayed on retry: {replayed}"
        )
        reconcile = servers.cli("reconcile")
        assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    except BaseException:
        print(servers.logs()[-20_000:])
        raise
    finally:
        await blocker.close()
        await watcher.close()
