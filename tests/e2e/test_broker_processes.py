"""The event bus with real processes: `shelfwise worker` publishing and `shelfwise consume`,
each killed with kill -9 at the worst moment; a private RabbitMQ node (one per module)."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from shelfwise.config import Settings
from shelfwise.db import libpq_url, open_database
from tests.broker_support import (
    Bus,
    RabbitNode,
    Received,
    confirmed_position,
    insert_events,
    running_node,
)
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitNode]:
    with running_node() as node:
        yield node


class Processes:
    def __init__(self, database_url: str, rabbit: RabbitNode, tmp_path: Path) -> None:
        self.exchange = f"shelfwise.events.e2e-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": database_url,
            "SHELFWISE_ENV": "test",
            "SHELFWISE_LOG_JSON": "true",
            "SHELFWISE_DATA_DIR": str(tmp_path),
            "SHELFWISE_DB_POOL_SIZE": "2",
            "SHELFWISE_DB_MAX_OVERFLOW": "2",
            "SHELFWISE_BROKER_URL": rabbit.url,
            "SHELFWISE_BROKER_EXCHANGE": self.exchange,
            "SHELFWISE_BROKER_BACKOFF_MAX_SECONDS": "0.5",
            "SHELFWISE_RELAY_POLL_SECONDS": "0.1",
        }
        self.tmp_path = tmp_path
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, **settings: str) -> subprocess.Popen[bytes]:
        env = {**self.env, **settings}
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(SHELFWISE), *args],
                cwd=self.tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    async def logged(self, name: str, line: str, timeout: float = 20) -> None:
        async def check() -> bool:
            return line in self.log(name)

        await wait_until(check, timeout=timeout, what=f"{line} in {name}'s log")

    def stop_all(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def processes(database_url: str, rabbit: RabbitNode, tmp_path: Path) -> Iterator[Processes]:
    running = Processes(database_url, rabbit, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
async def bus(database_url: str, rabbit: RabbitNode, processes: Processes) -> AsyncIterator[Bus]:
    running = Bus(database_url, rabbit, processes.exchange)
    try:
        yield running
    finally:
        await running.close()


async def _killed(process: subprocess.Popen[bytes]) -> None:
    async def gone() -> bool:
        return process.poll() is not None

    await wait_until(gone, timeout=20, what="the process to die")


async def test_publisher_killed_mid_batch_resumes_from_its_confirmed_position(
    database_url: str, settings: Settings, processes: Processes, bus: Bus
) -> None:
    total = 800
    db = open_database(settings, database_url)
    received = Received()
    try:
        await bus.start_consumer(
            db.sessions, "all-" + uuid.uuid4().hex[:6], ("#",), received.handle
        )
        await insert_events(database_url, total)
        small_batches = {"SHELFWISE_BROKER_BATCH_SIZE": "25", "SHELFWISE_BROKER_WINDOW": "5"}
        alpha = processes.start("alpha", "worker", "--name", "alpha", **small_batches)

        async def publishing() -> bool:
            return await confirmed_position(libpq_url(database_url), processes.exchange) > 0

        await wait_until(publishing, timeout=30, interval=0.01, what="alpha publishing")
        alpha.send_signal(signal.SIGKILL)  # mid-stream: batches in flight, unconfirmed
        await _killed(alpha)
        stored = await confirmed_position(libpq_url(database_url), processes.exchange)
        assert 0 < stored < total, "the kill must land mid-stream for this test to mean much"

        processes.start("beta", "worker", "--name", "beta", **small_batches)

        async def everything() -> bool:
            return len(received.events) >= total

        await wait_until(everything, timeout=60, interval=0.1, what="every event consumed")
        assert received.positions == list(range(1, total + 1))
        await processes.logged("beta", f'"resume_after": {stored}')
    finally:
        await db.dispose()


@pytest.mark.parametrize("batch_size", [1, 50], ids=["one-at-a-time", "batched"])
async def test_consumer_killed_after_commit_before_ack_processes_nothing_twice(
    database_url: str, processes: Processes, bus: Bus, batch_size: int
) -> None:
    total, die_at = 40, 10
    batching = {
        "SHELFWISE_BROKER_CONSUMER_BATCH_SIZE": str(batch_size),
        "SHELFWISE_BROKER_CONSUMER_LINGER_MS": "50",
    }
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE broker_test_seen (message_id text PRIMARY KEY, position bigint)")
    queue = "orders-" + uuid.uuid4().hex[:6]
    consume = ("consume", "--queue", queue, "--events", "order.*")
    handler = ("--handler", "tests.e2e.broker_handlers:record")
    first = processes.start(
        "first",
        *consume,
        *handler,
        SHELFWISE_TEST_DIE_AT_POSITION=str(die_at),
        SHELFWISE_TEST_DIE_MARKER=str(processes.tmp_path / "died"),
        **batching,
    )
    await processes.logged("first", '"broker_consuming"')
    await insert_events(database_url, total)
    bus.start_relay()
    bus.start_publisher()

    await _killed(first)
    assert first.returncode == -signal.SIGKILL
    with psycopg.connect(database_url) as conn:
        seen = [r[0] for r in conn.execute("SELECT position FROM broker_test_seen ORDER BY 1")]
    if batch_size == 1:
        assert seen == list(range(1, die_at + 1))  # position 10 committed, its ack never sent
    else:  # the whole batch holding position 10 committed, its ack never sent
        assert seen == list(range(1, len(seen) + 1))
        assert die_at <= len(seen) <= total

    processes.start(
        "second",
        *consume,
        *handler,
        SHELFWISE_TEST_DIE_MARKER=str(processes.tmp_path / "died"),
        **batching,
    )

    async def all_seen() -> bool:
        with psycopg.connect(database_url) as conn:
            row = conn.execute("SELECT count(*) FROM broker_test_seen").fetchone()
        return bool(row and row[0] >= total)

    await wait_until(all_seen, timeout=30, interval=0.1, what="every event processed")
    with psycopg.connect(database_url) as conn:
        seen = [r[0] for r in conn.execute("SELECT position FROM broker_test_seen ORDER BY 1")]
        inbox = conn.execute(
            "SELECT count(*), count(DISTINCT message_id) FROM broker_inbox WHERE consumer = %s",
            (queue,),
        ).fetchone()
    assert seen == list(range(1, total + 1))
    assert inbox == (total, total)
    # The redelivered position 10 was recognised by the inbox and only acknowledged.
    await processes.logged("second", '"broker_message_duplicate"')
