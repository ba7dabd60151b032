"""A private RabbitMQ node for tests: free ports, its own directories, no orphans.

`RabbitNode.start()` runs `rabbitmq-server` (the real script under /usr/lib/rabbitmq/bin,
not Debian's wrapper, which switches to the `rabbitmq` user and the system directories)
with every path under the test's tmp directory and every port picked free:

- RABBITMQ_NODE_PORT (AMQP), RABBITMQ_DIST_PORT (Erlang distribution) and ERL_EPMD_PORT
  (the port mapper), so two xdist workers — or a developer's own broker — never collide;
- a unique RABBITMQ_NODENAME (`shelfwise-<port>@localhost`) and HOME (the Erlang cookie);
- its own config, plugins, mnesia (data) and log directories.

`epmd` is started first by us, in the node's process group, so that the node does not
daemonise one of its own that would outlive the test. `stop()` kills the whole group.
Never run `rabbitmq-server --version`: that starts a server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import psycopg
import sqlalchemy.event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shelfwise.broker.consumer import ConsumerConfig, InboxConsumer
from shelfwise.broker.envelope import BrokerEvent, OutboxRow, to_message
from shelfwise.broker.publisher import BrokerPublisher, PublisherConfig
from shelfwise.broker.topology import declare_consumer_queue
from shelfwise.db import libpq_url
from shelfwise.events.relay import Relay, RelayConfig
from shelfwise.jobs.alerts import Alerts
from tests.support import (
    create_location,
    create_product,
    receive_stock,
    require_binary,
    wait_until,
)

REAL_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RabbitNode:
    def __init__(self, base: Path) -> None:
        wrapper = require_binary("rabbitmq-server")
        self.script = str(REAL_SCRIPT) if REAL_SCRIPT.exists() else wrapper
        self.epmd = require_binary("epmd")
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"shelfwise-{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self._process: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        for sub in ("home", "mnesia", "log", "etc"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        etc = self.base / "etc"
        (etc / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "disk_free_limit.absolute = 10MB\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (etc / "enabled_plugins").write_text("[].\n")
        (etc / "rabbitmq-env.conf").write_text("")

    @property
    def env(self) -> dict[str, str]:
        etc = self.base / "etc"
        return {
            **os.environ,
            "HOME": str(self.base / "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_CONF_ENV_FILE": str(etc / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(etc / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(etc / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(etc / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.base / "plugins-expand"),
        }

    def start(self) -> None:
        """Start (or restart, keeping the data) and wait until AMQP answers."""
        if self._epmd is None or self._epmd.poll() is not None:
            self._epmd = subprocess.Popen(
                [self.epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        with (self.base / "log" / "stdout.log").open("ab") as out:
            self._process = subprocess.Popen(
                [self.script],
                cwd=self.base,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() kills all of it
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self.answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"rabbitmq-server did not start:\n{log}")
            time.sleep(0.1)  # polling the condition, with the deadline above

    @property
    def pid(self) -> int:
        """The node's process (its Erlang VM is a descendant): for CPU accounting."""
        assert self._process is not None
        return self._process.pid

    def answers(self) -> bool:
        async def probe() -> bool:
            try:
                connection = await aio_pika.connect(self.url, timeout=1)
            except Exception:  # not listening yet, or still booting
                return False
            await connection.close()
            return True

        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        return asyncio.run(probe())

    def shut_down(self) -> None:
        """Stop the node (SIGTERM: a clean shutdown; its data stays for `start()`).

        Not kill -9: RabbitMQ 3.10 (Debian 12) did not bring a single node's quorum
        queues back after a kill -9 here (their Ra servers timed out at every declare
        and consume for minutes), while classic queues recovered. A crashed single-node
        broker is a data-recovery problem of RabbitMQ itself, not of this contract.
        """
        _kill_group(self._process, signal.SIGTERM)
        self._process = None

    def stop(self) -> None:
        _kill_group(self._process, signal.SIGTERM)
        self._process = None
        _kill_group(self._epmd, signal.SIGKILL)
        self._epmd = None

    def log_tail(self, lines: int = 40) -> str:
        text = []
        for path in sorted((self.base / "log").glob("*.log")):
            text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)

    def wipe(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _kill_group(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    # Children of the group that outlived the leader (erl_child_setup, inet_gethost).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_node() -> Iterator[RabbitNode]:
    """A started node, stopped (with its epmd) and removed however the block ends.

    Its directory is its own `mkdtemp`, not pytest's `tmp_path_factory`: pytest keeps only
    the newest three base temp directories per user, so on a machine where other pytest
    sessions start, a long module's broker could lose its data directory mid-test."""
    node = RabbitNode(Path(tempfile.mkdtemp(prefix="shelfwise-rabbitmq-")))
    try:
        node.start()
        yield node
    finally:
        node.stop()
        node.wipe()


class Received:
    """What an inbox consumer committed (only first processings: the inbox drops
    duplicates before the handler runs). An event is recorded when its transaction
    commits: a batch rolled back by a failing handler records nothing, like the
    database writes of a real handler."""

    def __init__(self) -> None:
        self.events: list[BrokerEvent] = []

    async def handle(self, session: AsyncSession, event: BrokerEvent) -> None:
        def committed(_: Session) -> None:
            self.events.append(event)

        sqlalchemy.event.listen(session.sync_session, "after_commit", committed, once=True)

    @property
    def positions(self) -> list[int]:
        return [event.position for event in self.events]


async def dead_letters(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(f"{queue}.dead", passive=True, timeout=5)
        return int(declared.declaration_result.message_count or 0)


async def queue_state(url: str, queue: str) -> tuple[int, int] | None:
    """(messages ready, consumers) of `queue`; None when it does not exist."""
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True, timeout=5)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return None
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def delete_queue(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue, timeout=5)


async def stamped_positions(database_url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT position FROM outbox_events WHERE position IS NOT NULL ORDER BY position"
        )
        return [int(row[0]) for row in await cur.fetchall()]


async def unstamped(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM outbox_events WHERE position IS NULL")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def confirmed_position(database_url: str, exchange: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT position FROM broker_publisher_positions WHERE exchange = %s", (exchange,)
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def insert_events(database_url: str, count: int, type: str = "order.reserved") -> None:
    """`count` committed outbox events without going through the API (backlogs)."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload)"
            " SELECT %s, 'order', g::text, jsonb_build_object('n', g)"
            " FROM generate_series(1, %s) AS g",
            (type, count),
        )


class Bus:
    """Relay + publisher + consumers as tasks of this loop, stopped at the end."""

    def __init__(self, database_url: str, rabbit: RabbitNode, exchange: str) -> None:
        self.database_url = libpq_url(database_url)
        self.rabbit = rabbit
        self.exchange = exchange
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.queues: list[str] = []

    def start_relay(self) -> None:
        relay = Relay(self.database_url, RelayConfig(batch_size=100, poll_interval=0.1))
        self.tasks.append(asyncio.create_task(relay.run(self.stop)))

    def start_publisher(self, alerts: Alerts | None = None, **config: Any) -> BrokerPublisher:
        settings = {"batch_size": 50, "window": 20, "poll_interval": 0.1, "backoff_max": 0.5}
        publisher = BrokerPublisher(
            self.database_url,
            self.rabbit.url,
            PublisherConfig(exchange=self.exchange, **{**settings, **config}),
            alerts=alerts,
            rng=random.Random(3),
        )
        self.tasks.append(asyncio.create_task(publisher.run(self.stop)))
        return publisher

    async def start_consumer(
        self,
        sessions: async_sessionmaker[AsyncSession],
        queue: str,
        patterns: tuple[str, ...],
        handler: Callable[[AsyncSession, BrokerEvent], Awaitable[None]],
        **config: Any,
    ) -> InboxConsumer:
        consumer = InboxConsumer(
            sessions,
            self.rabbit.url,
            ConsumerConfig(
                queue=queue,
                patterns=patterns,
                exchange=self.exchange,
                backoff_max=0.5,
                **config,
            ),
            handler,
            rng=random.Random(5),
        )
        self.queues.append(queue)
        self.tasks.append(asyncio.create_task(consumer.run(self.stop)))
        await wait_until(_is_set(consumer.consuming), timeout=10, what="consumer subscribed")
        return consumer

    async def close(self) -> None:
        """Stop everything; a task stuck past 15 s (a broker that stopped answering) is
        cancelled and left behind rather than hanging the test."""
        self.stop.set()
        _, stuck = await asyncio.wait(self.tasks, timeout=15)
        for task in stuck:
            task.cancel()
        if stuck:
            await asyncio.wait(stuck, timeout=5)
        await self._delete_queues()

    async def _delete_queues(self) -> None:
        """Durable quorum queues outlive the test on the module's node; left there, every
        one of them must be recovered when a later test restarts the node, which on a
        loaded machine kept the restart test's own queue waiting past its bound."""
        with contextlib.suppress(Exception):
            connection = await aio_pika.connect(self.rabbit.url, timeout=5)
            async with connection:
                for queue in self.queues:
                    for name in (queue, f"{queue}.dead"):
                        with contextlib.suppress(Exception):
                            channel = await connection.channel()  # a failure closes it
                            await channel.queue_delete(name, timeout=5)
                            await channel.close()


def _is_set(event: asyncio.Event) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return event.is_set()

    return check


async def declare_queue(
    url: str, exchange: str, queue: str, patterns: tuple[str, ...], *, delivery_limit: int
) -> None:
    """A consumer's queue declared ahead of its consumer (messages wait in it)."""
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel()
        await declare_consumer_queue(
            channel,
            exchange=exchange,
            queue=queue,
            patterns=patterns,
            delivery_limit=delivery_limit,
        )


async def publish_events(url: str, exchange: str, positions: list[int]) -> None:
    """`order.reserved` events with message ids `m<position>`, as the publisher would send
    them (a position twice: two copies, as after a publisher's reconnect)."""
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        now = datetime.now(UTC)
        for position in positions:
            row = OutboxRow(
                position=position,
                id=position,
                type="order.reserved",
                aggregate_type="order",
                aggregate_id=str(position),
                version=1,
                payload_json=json.dumps({"n": position}),
                created_at=now,
                published_at=now,
            )
            message = to_message(row)
            message.message_id = f"m{position}"
            await target.publish(message, routing_key=row.type, mandatory=True)


# -- a shop and a burst of writes through the API (the tests' event source) ---------------


async def open_shop(client: httpx.AsyncClient, staff: dict[str, Any]) -> dict[str, Any]:
    """Two locations, four products with stock at the first."""
    north = await create_location(client, staff["headers"])
    south = await create_location(client, staff["headers"])
    products = [await create_product(client, staff["headers"]) for _ in range(4)]
    for product in products:
        done = await receive_stock(client, staff["headers"], product["id"], north["id"], 500)
        assert done.status_code == 201, done.text
    return {"north": north["id"], "south": south["id"], "products": [p["id"] for p in products]}


async def write_burst(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    shop: dict[str, Any],
    rounds: int,
    seed: int,
) -> None:
    """Orders, adjustments and transfers from concurrent clients, `rounds` of each."""
    rng = random.Random(seed)

    async def order() -> None:
        body = {
            "lines": [{"product_id": rng.choice(shop["products"]), "quantity": 1}],
            "location_id": shop["north"],
        }
        headers = {**customer["headers"], "Idempotency-Key": uuid.uuid4().hex}
        response = await client.post("/v1/orders", json=body, headers=headers)
        assert response.status_code == 201, response.text

    async def adjust() -> None:
        response = await receive_stock(
            client, staff["headers"], rng.choice(shop["products"]), shop["north"], 3
        )
        assert response.status_code == 201, response.text

    async def transfer() -> None:
        body = {
            "product_id": rng.choice(shop["products"]),
            "from_location_id": shop["north"],
            "to_location_id": shop["south"],
            "quantity": 1,
            "reason": "rebalance",
        }
        headers = {**staff["headers"], "Idempotency-Key": uuid.uuid4().hex}
        response = await client.post("/v1/stock/transfers", json=body, headers=headers)
        assert response.status_code == 201, response.text

    writes = [make() for _ in range(rounds) for make in (order, adjust, transfer)]
    rng.shuffle(writes)
    await asyncio.gather(*writes)


async def all_delivered(bus: Bus, received: Received, timeout: float = 30.0) -> list[int]:
    """Wait until every stamped event was published, confirmed and processed."""

    async def done() -> bool:
        if await unstamped(bus.database_url):
            return False
        stamped = await stamped_positions(bus.database_url)
        return len(received.events) >= len(stamped) and stamped[-1:] == received.positions[-1:]

    try:
        await wait_until(done, timeout=timeout, interval=0.1, what="every event consumed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {await delivery_report(bus, received)}") from None
    return await stamped_positions(bus.database_url)


async def delivery_report(bus: Bus, received: Received) -> str:
    """Where the missing events are: not confirmed by the broker (publisher), or
    confirmed but not in any consumer's inbox (broker, consumer), or committed in the
    inbox but not recorded by the test (its record of commits)."""
    stamped = await stamped_positions(bus.database_url)
    confirmed = await confirmed_position(bus.database_url, bus.exchange)
    async with await psycopg.AsyncConnection.connect(bus.database_url) as conn:
        cur = await conn.execute(
            "SELECT position FROM broker_inbox WHERE consumer = ANY(%s)", (bus.queues,)
        )
        inbox = {int(row[0]) for row in await cur.fetchall()}
    missing = sorted(set(stamped) - set(received.positions))
    return (
        f"{len(stamped)} stamped, {len(received.events)} recorded, broker confirmed up to"
        f" {confirmed}; missing {missing[:20]}, of them committed in the inbox"
        f" {sorted(set(missing) & inbox)[:20]}"
    )


async def at_least(received: Received, count: int) -> bool:
    return len(received.events) >= count
