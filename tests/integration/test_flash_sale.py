"""Flash sales: many customers racing for the same few units, through the real HTTP app.

The order service promises (src/shelfwise/orders/service.py, docs/decisions/0004):
reservations are conditional UPDATEs serialised on the stock level's row lock, and every
transaction that touches several levels locks them in ascending level id. Under a burst
that must mean: never one unit more reserved than exists, a clean 409 for everyone who
missed out, no 5xx, and no deadlock — whatever order the lines of an order come in.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.events.models import OutboxEvent
from shelfwise.idempotency.models import IdempotencyRecord
from shelfwise.identity.models import Role
from shelfwise.inventory.models import StockLevel
from shelfwise.orders.models import Order, OrderLine, OrderStatus
from shelfwise.reconciliation import reconcile_all
from tests.live_support import running_relay
from tests.support import create_location, create_product, make_user, receive_stock, wait_until

STOCK = 50
REQUESTS = 200
CUSTOMERS = 8
RETRIES_METRIC = "shelfwise_db_transaction_retries_total"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Let queued requests wait for a connection instead of being shed.

    A 200-request burst queues for the pool's 25 connections; on a busy CI machine the
    queue can outlast the default 5 s checkout timeout, and those requests are then shed
    with 503 (see the last test). These tests are about consistency, not capacity.
    """
    return settings.model_copy(update={"db_pool_timeout_seconds": 60.0})


async def customers(ctx: AppContext, count: int) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(make_user(ctx, Role.CUSTOMER) for _ in range(count))))


async def post_order(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    lines: list[tuple[str, int]],
    **extra: Any,
) -> httpx.Response:
    body = {"lines": [{"product_id": p, "quantity": q} for p, q in lines], **extra}
    headers = {**user["headers"], "Idempotency-Key": f"flash-{uuid.uuid4().hex}"}
    return await client.post("/v1/orders", json=body, headers=headers)


async def levels_of(ctx: AppContext, product_ids: list[str]) -> list[StockLevel]:
    async with ctx.db.sessions() as session, session.begin():
        rows = await session.scalars(
            select(StockLevel)
            .where(StockLevel.product_id.in_([uuid.UUID(p) for p in product_ids]))
            .order_by(StockLevel.id)
        )
        return list(rows)


async def assert_invariants(ctx: AppContext) -> None:
    """0 <= reserved <= on_hand everywhere; counters == ledger; reserved == open lines."""
    async with ctx.db.sessions() as session:
        report = await reconcile_all(session)
        async with session.begin():
            broken = (
                await session.execute(
                    select(StockLevel.id, StockLevel.on_hand, StockLevel.reserved).where(
                        (StockLevel.reserved < 0) | (StockLevel.reserved > StockLevel.on_hand)
                    )
                )
            ).all()
    assert report.clean, report
    assert broken == []


def retry_samples(metrics: str) -> dict[tuple[str, str], float]:
    """`{(use_case, sqlstate): value}` of the transaction-retry counter."""
    pattern = re.compile(
        rf'^{RETRIES_METRIC}\{{use_case="([^"]*)",sqlstate="([^"]*)"\}} ([0-9.e+]+)$',
        re.MULTILINE,
    )
    return {(case, state): float(value) for case, state, value in pattern.findall(metrics)}


async def retries(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    # Exposed even before the first retry: HELP and TYPE lines come with the family.
    assert f"# TYPE {RETRIES_METRIC} counter" in response.text
    return retry_samples(response.text)


def assert_clean_refusal(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "insufficient_stock", problem
    assert problem["status"] == 409
    assert problem["lines"], problem


async def test_two_hundred_buyers_fifty_units_exactly_fifty_reserved(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    received = await receive_stock(client, staff["headers"], product["id"], location["id"], STOCK)
    assert received.status_code == 201, received.text
    buyers = await customers(ctx, CUSTOMERS)

    responses = await asyncio.gather(
        *(post_order(client, buyers[i % CUSTOMERS], [(product["id"], 1)]) for i in range(REQUESTS))
    )

    assert not [r for r in responses if r.status_code >= 500], "5xx under contention"
    created = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code != 201]
    assert len(created) == STOCK
    assert len(refused) == REQUESTS - STOCK
    for response in refused:
        assert_clean_refusal(response)
        assert response.json()["lines"] == [
            {"product_id": product["id"], "requested": 1, "available": 0}
        ]
    orders = [r.json() for r in created]
    assert len({o["id"] for o in orders}) == STOCK
    assert all(o["status"] == "reserved" for o in orders)
    assert all(r.headers["Idempotent-Replayed"] == "false" for r in created)

    async with ctx.db.sessions() as session, session.begin():
        reserved_units = await session.scalar(
            select(func.coalesce(func.sum(OrderLine.quantity), 0))
            .join(Order, Order.id == OrderLine.order_id)
            .where(Order.status == OrderStatus.RESERVED.value)
        )
        all_orders = await session.scalar(select(func.count()).select_from(Order))
        # Refusals roll back with their idempotency record: only successes are stored.
        records = await session.scalar(select(func.count()).select_from(IdempotencyRecord))
    assert (reserved_units, all_orders, records) == (STOCK, STOCK, STOCK)
    [level] = await levels_of(ctx, [product["id"]])
    assert (level.on_hand, level.reserved) == (STOCK, STOCK)
    await assert_invariants(ctx)

    # Sold out is sold out: the next buyer is refused cleanly too.
    assert_clean_refusal(await post_order(client, buyers[0], [(product["id"], 1)]))


async def test_multi_line_orders_in_opposite_line_orders_never_deadlock(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    """Overlapping multi-line orders whose lines arrive in every permutation, alongside
    transfers in both directions, all at once: only 201 or 409 reach clients."""
    rng = random.Random(20260115)
    stock = {"A": 40, "B": 30, "C": 20}
    east = await create_location(client, staff["headers"])
    west = await create_location(client, staff["headers"])
    products = {name: await create_product(client, staff["headers"]) for name in stock}
    for name, quantity in stock.items():
        for location, units in ((east, quantity), (west, quantity // 2)):
            response = await receive_stock(
                client, staff["headers"], products[name]["id"], location["id"], units
            )
            assert response.status_code == 201, response.text
    initial = {name: q + q // 2 for name, q in stock.items()}
    buyers = await customers(ctx, CUSTOMERS)
    before = await retries(client)

    shapes = [
        *itertools.permutations("AB"),
        *itertools.permutations("BC"),
        *itertools.permutations("ABC"),
    ]
    order_requests: list[tuple[str, ...]] = [shapes[i % len(shapes)] for i in range(60)]
    rng.shuffle(order_requests)

    async def order(i: int, names: tuple[str, ...]) -> httpx.Response:
        lines = [(products[n]["id"], rng.randint(1, 3)) for n in names]
        # Every fifth order pins a location, the others let the service choose.
        pinned = {"location_id": (east, west)[i % 2]["id"]} if i % 5 == 0 else {}
        return await post_order(client, buyers[i % CUSTOMERS], lines, **pinned)

    async def transfer(i: int) -> httpx.Response:
        source, target = (east, west) if i % 2 else (west, east)
        body = {
            "product_id": products["ABC"[i % 3]]["id"],
            "from_location_id": source["id"],
            "to_location_id": target["id"],
            "quantity": 1 + i % 2,
            "reason": "rebalance during the sale",
        }
        headers = {**staff["headers"], "Idempotency-Key": f"move-{uuid.uuid4().hex}"}
        return await client.post("/v1/stock/transfers", json=body, headers=headers)

    order_tasks = [order(i, names) for i, names in enumerate(order_requests)]
    transfer_tasks = [transfer(i) for i in range(12)]
    responses = await asyncio.gather(*order_tasks, *transfer_tasks)
    order_responses = responses[: len(order_tasks)]
    transfer_responses = responses[len(order_tasks) :]

    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {201, 409}, [
        r.text for r in responses if r.status_code not in (201, 409)
    ]
    for response in responses:
        if response.status_code == 409:
            assert_clean_refusal(response)
    created = [r.json() for r in order_responses if r.status_code == 201]
    assert created, "contention must not starve every order"
    assert any(r.status_code == 201 for r in transfer_responses)
    for placed in created:
        # Orders are never split across locations.
        assert len({line["location_id"] for line in placed["lines"]}) == 1

    levels = await levels_of(ctx, [p["id"] for p in products.values()])
    by_product = {uuid.UUID(p["id"]): name for name, p in products.items()}
    on_hand = dict.fromkeys(stock, 0)
    reserved = dict.fromkeys(stock, 0)
    for level in levels:
        assert 0 <= level.reserved <= level.on_hand, level
        on_hand[by_product[level.product_id]] += level.on_hand
        reserved[by_product[level.product_id]] += level.reserved
    # Transfers move units, orders only reserve them: nothing appears or vanishes.
    assert on_hand == initial
    ordered = dict.fromkeys(stock, 0)
    for placed in created:
        for line in placed["lines"]:
            ordered[by_product[uuid.UUID(line["product_id"])]] += line["quantity"]
    assert reserved == ordered
    await assert_invariants(ctx)

    after = await retries(client)
    deadlocks = sum(
        value - before.get(key, 0.0) for key, value in after.items() if key[1] == "40P01"
    )
    # Lock order (ascending level id) leaves no cycle to break: not even a retried one.
    assert deadlocks == 0, after


async def test_exhausted_pool_sheds_with_503_and_the_retry_succeeds(
    settings: Settings, clock: FixedClock
) -> None:
    """Overload is not a bug: no connection free within the checkout timeout is a
    retryable 503 with Retry-After (not a bare 500), and nothing was half-done."""
    tight = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_seconds": 0.2}
    )
    application = create_app(tight, clock=clock)
    async with application.router.lifespan_context(application):
        ctx: AppContext = application.state.ctx
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            staff = await make_user(ctx, Role.STAFF)
            buyer = await make_user(ctx, Role.CUSTOMER)
            product = await create_product(c, staff["headers"])
            location = await create_location(c, staff["headers"])
            received = await receive_stock(c, staff["headers"], product["id"], location["id"], 3)
            assert received.status_code == 201, received.text
            body = {"lines": [{"product_id": product["id"], "quantity": 1}]}
            headers = {**buyer["headers"], "Idempotency-Key": "busy-then-retried"}

            # The driver pool's only connection (orders are placed on it, and principals
            # are looked up on it): busy for longer than the checkout timeout.
            async with ctx.driver.transaction() as held:
                await held.execute("SELECT 1")
                shed = await c.post("/v1/orders", json=body, headers=headers)
            assert shed.status_code == 503, shed.text
            assert shed.headers["Retry-After"] == "1"
            assert shed.json()["code"] == "database_busy"

            retried = await c.post("/v1/orders", json=body, headers=headers)
            assert retried.status_code == 201, retried.text
            assert retried.headers["Idempotent-Replayed"] == "false"
            async with ctx.db.sessions() as session, session.begin():
                assert await session.scalar(select(func.count()).select_from(Order)) == 1


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_hot_level_gate_sells_out_without_the_database_and_a_restock_reopens(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any], database_url: str
) -> None:
    """300 buyers of one product at one location, 10 units (orders/admission.py): exactly
    10 placed and 290 refused, none shed; once the gate knows the level is empty it
    answers the rest itself; a retry of a placed order still replays it; the restock's
    `stock.changed` reopens the level — and the sale's own older events do not."""
    ctx.admission.clock = lambda: 0.0  # the TTL never runs out here: only events clear it
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    received = await receive_stock(client, staff["headers"], product["id"], location["id"], 10)
    assert received.status_code == 201, received.text
    buyers = await customers(ctx, CUSTOMERS)
    level_key = (uuid.UUID(product["id"]), uuid.UUID(location["id"]))
    at = {"location_id": location["id"]}
    db_refusals = _sample("shelfwise_orders_total", outcome="insufficient_stock")
    gate_refusals = _sample("shelfwise_admission_total", outcome="sold_out")

    keys = [f"hot-{i}-{uuid.uuid4().hex}" for i in range(300)]

    async def buy(i: int, key: str) -> httpx.Response:
        body = {"lines": [{"product_id": product["id"], "quantity": 1}], **at}
        headers = {**buyers[i % CUSTOMERS]["headers"], "Idempotency-Key": key}
        return await client.post("/v1/orders", json=body, headers=headers)

    responses = await asyncio.wait_for(
        asyncio.gather(*(buy(i, key) for i, key in enumerate(keys))), timeout=60
    )

    statuses = [r.status_code for r in responses]
    assert (statuses.count(201), statuses.count(409)) == (10, 290), sorted(set(statuses))
    for response in responses:
        if response.status_code == 409:
            assert_clean_refusal(response)
            assert response.json()["lines"][0]["available"] == 0
    # Only the placements admitted when the level ran dry asked the database.
    asked = _sample("shelfwise_orders_total", outcome="insufficient_stock") - db_refusals
    answered = _sample("shelfwise_admission_total", outcome="sold_out") - gate_refusals
    assert 1 <= asked <= ctx.admission.holders, asked
    assert asked + answered == 290
    [level] = await levels_of(ctx, [product["id"]])
    assert (level.on_hand, level.reserved) == (10, 10)
    await assert_invariants(ctx)
    assert ctx.admission.is_sold_out(level_key)

    # Retries while sold out: a placed order replays, a refused one is refused again.
    placed = statuses.index(201)
    replay = await buy(placed, keys[placed])
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == responses[placed].json()["id"]
    assert_clean_refusal(await buy(statuses.index(409), keys[statuses.index(409)]))

    hub = ctx.hub
    assert hub is not None
    async with running_relay(database_url):
        # The sale's own events (10 reservations, the older ones with units left) arrive
        # after the gate learned "sold out": they must not reopen it.
        async def caught_up() -> bool:
            await hub.catch_up()
            return await _delivered_everything(ctx)

        await wait_until(caught_up, what="the hub to deliver the sale's events")
        assert ctx.admission.is_sold_out(level_key)

        restocked = await receive_stock(client, staff["headers"], product["id"], location["id"], 2)
        assert restocked.status_code == 201, restocked.text

        async def reopened() -> bool:
            await hub.catch_up()
            return not ctx.admission.is_sold_out(level_key)

        await wait_until(reopened, what="the restock's stock.changed to reopen the level")
    late = await buy(0, f"late-{uuid.uuid4().hex}")
    assert late.status_code == 201, late.text


async def _delivered_everything(ctx: AppContext) -> bool:
    """Every event written so far is published, and this process's hub has read it."""
    async with ctx.db.sessions() as session, session.begin():
        unpublished = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.position.is_(None))
        )
        last = await session.scalar(select(func.max(OutboxEvent.position)))
    assert ctx.hub is not None
    return unpublished == 0 and ctx.hub.head >= (last or 0)
