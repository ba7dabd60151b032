"""The event bus against a real RabbitMQ node (one per module, tests/broker_support.py).

The relay, the publisher and the inbox consumers run in the test's event loop; each test
uses its own exchange and queues, so tests sharing the node never see each other's events.
"""

from __future__ import annotations

import asyncio
import json
import random
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
    confirmed_position,
    dead_letters,
    declare_queue,
    insert_events,
    publish_events,
    stamped_positions,
    unstamped,
)
from tests.support import create_location, create_product, receive_stock, wait_until

pytestmark = pytest.mark.e2e  # starts rabbitmq-server


async def _shop(client: httpx.AsyncClient, staff: dict[str, Any]) -> dict[str, Any]:
    """Two locations, four products with stock at the first."""
    north = await create_location(client, staff["headers"])
    south = await create_location(client, staff["headers"])
    products = [await create_product(client, staff["headers"]) for _ in range(4)]
    for product in products:
        done = await receive_stock(client, staff["headers"], product["id"], north["id"], 500)
        assert done.status_code == 201, done.text
    return {"north": north["id"], "south": south["id"], "products": [p["id"] for p in products]}


async def _burst(
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


async def _all_delivered(bus: Bus, received: Received, timeout: float = 30.0) -> list[int]:
    """Wait until every stamped event was published, confirmed and processed."""

    async def done() -> bool:
        if await unstamped(bus.database_url):
            return False
        stamped = await stamped_positions(bus.database_url)
        return len(received.events) >= len(stamped) and stamped[-1:] == received.positions[-1:]

    await wait_until(done, timeout=timeout, interval=0.1, what="every event consumed")
    return await stamped_positions(bus.database_url)


async def test_a_concurrent_burst_arrives_in_position_order_exactly_once(
    bus: Bus,
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
) -> None:
    shop = await _shop(client, staff)
    received = Received()
    await bus.start_consumer(
        ctx.db.sessions, "audit-" + uuid.uuid4().hex[:6], ("#",), received.handle
    )
    bus.start_relay()
    publisher = bus.start_publisher()
    await _burst(client, staff, customer, shop, rounds=15, seed=1)

    stamped = await _all_delivered(bus, received)
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


async def _at_least(received: Received, count: int) -> bool:
    return len(received.events) >= count


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

    await wait_until(lambda: _at_least(received, 6), timeout=20, what="order events consumed")
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
    await wait_until(lambda: _at_least(received, 3), timeout=10, what="the others consumed")
    assert received.positions == [1, 3, 4]  # the poison message did not block the queue
    # Two tries in place per delivery; delivery limit 2: the third delivery's failure
    # dead-letters it.
    assert attempts[2] == 3 * 2

    fixed.set()
    assert await replay_dead_letters(bus.rabbit.url, queue=queue) == 1
    await wait_until(lambda: _at_least(received, 4), timeout=10, what="the replayed message")
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
