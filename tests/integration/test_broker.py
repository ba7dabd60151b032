"""The event bus against a real RabbitMQ node (one per module, tests/broker_support.py).

The relay, the publisher and the inbox consumers run in the test's event loop; each test
uses its own exchange and queues, so tests sharing the node never see each other's events,
and deletes its queues at the end (a restart of the node recovers fewer of them).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.broker import metrics
from shelfwise.broker.consumer import replay_dead_letters
from shelfwise.broker.envelope import BrokerEvent
from shelfwise.context import AppContext
from shelfwise.jobs.alerts import Alerts
from tests.broker_support import (
    Bus,
    Received,
    all_delivered,
    at_least,
    confirmed_position,
    dead_letters,
    declare_queue,
    delete_queue,
    insert_events,
    open_shop,
    publish_events,
    queue_state,
    write_burst,
)
from tests.support import wait_until

pytestmark = pytest.mark.e2e  # starts rabbitmq-server


async def test_a_concurrent_burst_arrives_in_position_order_exactly_once(
    bus: Bus,
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
) -> None:
    shop = await open_shop(client, staff)
    received = Received()
    await bus.start_consumer(
        ctx.db.sessions, "audit-" + uuid.uuid4().hex[:6], ("#",), received.handle
    )
    bus.start_relay()
    publisher = bus.start_publisher()
    await write_burst(client, staff, customer, shop, rounds=15, seed=1)

    stamped = await all_delivered(bus, received)
    assert received.positions == stamped == list(range(1, len(stamped) + 1))
    assert len({e.message_id for e in received.events}) == len(stamped)
    kinds = {e.type for e in received.events}
    assert {"order.reserved", "stock.changed", "product.created"} <= kinds
    await wait_until(
        lambda: _equals(confirmed_position(bus.database_url, bus.exchange), stamped[-1]),
        what="stored position at the end of the stream",
    )
    assert publisher.position == stamped[-1]
    order = next(e for e in received.events if e.type == "order.reserved")
    assert order.aggregate_type == "order"
    assert order.payload["order_id"] == order.aggregate_id


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_broker_restarted_mid_burst_loses_and_repeats_nothing(
    bus: Bus,
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
) -> None:
    shop = await open_shop(client, staff)
    received = Received()
    await bus.start_consumer(
        ctx.db.sessions, "restart-" + uuid.uuid4().hex[:6], ("#",), received.handle
    )
    bus.start_relay()
    bus.start_publisher()
    failures_before = metrics.CONNECTION_FAILURES.labels("publisher")._value.get()

    writing = asyncio.create_task(write_burst(client, staff, customer, shop, rounds=20, seed=2))
    await wait_until(lambda: at_least(received, 20), timeout=20, what="part of the burst consumed")
    # In-flight publishes lose their confirms; unacked deliveries go back to the queue.
    await asyncio.to_thread(bus.rabbit.shut_down)
    await writing  # the API does not depend on the broker
    await write_burst(client, staff, customer, shop, rounds=5, seed=3)  # written while it is down
    await asyncio.to_thread(bus.rabbit.start)

    # A restarted node recovers its quorum queue before confirms flow again; a publisher
    # whose confirms time out (10 s) backs off and resends. Seen once at > 40 s under load.
    # Its stalls on a shared node were a batch cancelled inside COMMIT (decision 0034).
    stamped = await all_delivered(bus, received, timeout=90)
    assert received.positions == list(range(1, len(stamped) + 1))
    assert metrics.CONNECTION_FAILURES.labels("publisher")._value.get() > failures_before


async def test_unroutable_events_are_counted_alerted_and_do_not_block_the_stream(
    bus: Bus, ctx: AppContext, database_url: str
) -> None:
    posted: list[dict[str, Any]] = []

    def on_alert(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    alerts = Alerts("https://alerts.test/hook", transport=httpx.MockTransport(on_alert))
    received = Received()
    await bus.start_consumer(
        ctx.db.sessions, "orders-" + uuid.uuid4().hex[:6], ("order.*",), received.handle
    )
    await insert_events(database_url, 3, type="order.reserved")
    await insert_events(database_url, 2, type="stock.audited")  # no queue binds it
    await insert_events(database_url, 3, type="order.cancelled")
    returned_before = metrics.RETURNED.labels("stock.audited")._value.get()
    bus.start_relay()
    bus.start_publisher(alerts=alerts)

    await wait_until(lambda: at_least(received, 6), timeout=20, what="order events consumed")
    await wait_until(
        lambda: _equals(confirmed_position(bus.database_url, bus.exchange), 8),
        what="the position past the unroutable events",
    )
    assert received.positions == [1, 2, 3, 6, 7, 8]
    assert metrics.RETURNED.labels("stock.audited")._value.get() - returned_before == 2
    # One alert per type per process, naming the first unroutable event.
    assert [(p["alert"], p["type"], p["position"]) for p in posted] == [
        ("broker_event_unroutable", "stock.audited", 4)
    ]


async def test_a_poison_message_is_dead_lettered_after_n_deliveries_and_can_be_replayed(
    bus: Bus, ctx: AppContext, database_url: str
) -> None:
    queue = "poison-" + uuid.uuid4().hex[:6]
    attempts: dict[int, int] = {}
    fixed = asyncio.Event()
    received = Received()

    async def fragile(session: AsyncSession, event: BrokerEvent) -> None:
        attempts[event.position] = attempts.get(event.position, 0) + 1
        if event.position == 2 and not fixed.is_set():
            raise ValueError("cannot handle this one")
        await received.handle(session, event)

    await bus.start_consumer(
        ctx.db.sessions,
        queue,
        ("order.*",),
        fragile,
        delivery_limit=2,
        tries_per_delivery=2,
        retry_delay=0.01,
    )
    await insert_events(database_url, 4)
    bus.start_relay()
    bus.start_publisher()

    await wait_until(lambda: _dead(bus.rabbit.url, queue, 1), timeout=20, what="a dead letter")
    await wait_until(lambda: at_least(received, 3), timeout=10, what="the others consumed")
    assert received.positions == [1, 3, 4]  # the poison message did not block the queue
    # Two tries in place per delivery; delivery limit 2: the third delivery's failure
    # dead-letters it.
    assert attempts[2] == 3 * 2

    fixed.set()
    assert await replay_dead_letters(bus.rabbit.url, queue=queue) == 1
    await wait_until(lambda: at_least(received, 4), timeout=10, what="the replayed message")
    assert received.positions == [1, 3, 4, 2]
    assert await dead_letters(bus.rabbit.url, queue) == 0


async def _dead(url: str, queue: str, count: int) -> bool:
    return await dead_letters(url, queue) >= count


async def test_a_batch_commits_once_drops_duplicates_and_a_poison_message_does_not_poison_it(
    bus: Bus, ctx: AppContext, database_url: str
) -> None:
    """Deliveries handled as a batch: one transaction for the batch's claims and work,
    copies and already-processed messages skipped; a failing message sends its batch
    one at a time (the others commit once each), then to the dead letters."""
    queue = "batch-" + uuid.uuid4().hex[:6]
    async with await psycopg.AsyncConnection.connect(bus.database_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE TABLE broker_test_batch (message_id text, position bigint,"
            " tx bigint DEFAULT txid_current())"
        )
        # Processed before (say, by a consumer killed before its ack).
        await conn.execute(
            "INSERT INTO broker_inbox (consumer, message_id, position) VALUES (%s, 'm2', 2)",
            (queue,),
        )
    attempts: dict[int, int] = {}

    async def record(session: AsyncSession, event: BrokerEvent) -> None:
        attempts[event.position] = attempts.get(event.position, 0) + 1
        if event.position == 6:
            raise ValueError("cannot handle this one")
        await session.execute(
            text("INSERT INTO broker_test_batch (message_id, position) VALUES (:m, :p)"),
            {"m": event.message_id, "p": event.position},
        )

    async def committed() -> list[tuple[str, int, int]]:
        async with await psycopg.AsyncConnection.connect(bus.database_url) as conn:
            cur = await conn.execute(
                "SELECT message_id, position, tx FROM broker_test_batch ORDER BY position"
            )
            return [(str(m), int(p), int(t)) for m, p, t in await cur.fetchall()]

    duplicates = metrics.CONSUMED.labels(queue, "duplicate")._value.get()
    # Declared first, so that the consumer finds the first five messages waiting.
    await declare_queue(bus.rabbit.url, bus.exchange, queue, ("order.*",), delivery_limit=2)
    await publish_events(bus.rabbit.url, bus.exchange, [1, 2, 3, 3, 4])  # 3 twice
    await bus.start_consumer(
        ctx.db.sessions,
        queue,
        ("order.*",),
        record,
        delivery_limit=2,
        tries_per_delivery=2,
        retry_delay=0.01,
        batch_linger=0.3,
    )
    await wait_until(lambda: _rows(committed, 3), timeout=10, what="the first batch")
    first = await committed()
    assert [(m, p) for m, p, _ in first] == [("m1", 1), ("m3", 3), ("m4", 4)]
    assert len({tx for _, _, tx in first}) == 1  # one transaction for the batch
    assert attempts == {1: 1, 3: 1, 4: 1}  # the copy of 3 and the processed 2: not handled
    assert metrics.CONSUMED.labels(queue, "duplicate")._value.get() - duplicates == 2

    await publish_events(bus.rabbit.url, bus.exchange, [5, 6, 7, 8])
    await wait_until(lambda: _dead(bus.rabbit.url, queue, 1), timeout=20, what="a dead letter")
    await wait_until(lambda: _rows(committed, 6), timeout=10, what="the others committed")
    rows = await committed()
    assert [p for _, p, _ in rows] == [1, 3, 4, 5, 7, 8]  # in order, once each, 6 skipped
    # Two tries per delivery (a batch's try counts as one), delivery limit 2: dead after 3.
    assert attempts[6] == 3 * 2
    async with await psycopg.AsyncConnection.connect(bus.database_url) as conn:
        cur = await conn.execute(
            "SELECT message_id FROM broker_inbox WHERE consumer = %s ORDER BY position", (queue,)
        )
        assert [r[0] for r in await cur.fetchall()] == ["m1", "m2", "m3", "m4", "m5", "m7", "m8"]


async def _rows(read: Callable[[], Awaitable[list[Any]]], count: int) -> bool:
    return len(await read()) >= count


async def test_a_consumer_the_broker_cancels_subscribes_again(bus: Bus, ctx: AppContext) -> None:
    """RabbitMQ cancels a consumer whose queue is gone (basic.cancel) but keeps its channel
    and connection open: a consumer that watched only the connection waited forever."""
    queue = "cancelled-" + uuid.uuid4().hex[:6]
    received = Received()
    await bus.start_consumer(ctx.db.sessions, queue, ("order.*",), received.handle)
    await publish_events(bus.rabbit.url, bus.exchange, [1])
    await wait_until(lambda: at_least(received, 1), timeout=10, what="the first event")

    await delete_queue(bus.rabbit.url, queue)  # the broker sends basic.cancel
    await wait_until(
        lambda: _subscribed(bus.rabbit.url, queue),
        timeout=10,
        what="queue declared, consumed again",
    )
    await publish_events(bus.rabbit.url, bus.exchange, [2])
    await wait_until(lambda: at_least(received, 2), timeout=10, what="an event after the cancel")
    assert received.positions == [1, 2]


async def _subscribed(url: str, queue: str) -> bool:
    state = await queue_state(url, queue)
    return state is not None and state[1] > 0


async def test_a_stopping_consumer_finishes_the_batch_in_hand(bus: Bus, ctx: AppContext) -> None:
    """Stopped (or cut off from the broker) while a batch is inside its transaction, the
    consumer lets it commit and ack, instead of cancelling it mid-COMMIT: committed with
    nobody told (the record of commits of this module's tests, a real consumer's metrics)."""
    queue = "finish-" + uuid.uuid4().hex[:6]
    inside, release = asyncio.Event(), asyncio.Event()
    received = Received()

    async def slow(session: AsyncSession, event: BrokerEvent) -> None:
        await received.handle(session, event)
        inside.set()
        await release.wait()

    await bus.start_consumer(ctx.db.sessions, queue, ("order.*",), slow)
    await publish_events(bus.rabbit.url, bus.exchange, [1])
    await wait_until(lambda: _set(inside), timeout=10, what="the handler inside its transaction")
    bus.stop.set()  # the commit that follows takes round trips; a cancel would come first
    release.set()
    _, running = await asyncio.wait(bus.tasks, timeout=15)
    assert not running

    assert received.positions == [1]
    assert await queue_state(bus.rabbit.url, queue) == (0, 0)  # acked, not redelivered


async def _set(event: asyncio.Event) -> bool:
    return event.is_set()
