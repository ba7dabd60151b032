"""Idempotency keys under concurrency (docs/decisions/0005-idempotency-keys.md).

A key names one logical operation. However many copies of a request race, and however a
client retries while its first attempt is still running, the effect happens once: every
copy gets the original response, its replay, or a `409 idempotency_key_in_progress`
telling it to retry — never a second order, and never a request that hangs behind the
first.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import func, select

from shelfwise.context import AppContext
from shelfwise.idempotency.models import IdempotencyRecord
from shelfwise.identity.models import Role
from shelfwise.inventory.models import StockLevel
from shelfwise.orders.models import Order
from tests.support import create_location, create_product, make_user, receive_stock, wait_until

COPIES = 20


async def stocked_product(
    client: httpx.AsyncClient, staff: dict[str, Any], quantity: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    response = await receive_stock(
        client, staff["headers"], product["id"], location["id"], quantity
    )
    assert response.status_code == 201, response.text
    return product, location


def order_body(product: dict[str, Any], quantity: int) -> dict[str, Any]:
    return {"lines": [{"product_id": product["id"], "quantity": quantity}]}


async def place(
    client: httpx.AsyncClient, user: dict[str, Any], key: str, body: dict[str, Any]
) -> httpx.Response:
    headers = {**user["headers"], "Idempotency-Key": key}
    return await client.post("/v1/orders", json=body, headers=headers)


async def order_count(ctx: AppContext) -> int:
    async with ctx.db.sessions() as session, session.begin():
        return int(await session.scalar(select(func.count()).select_from(Order)) or 0)


async def reserved_of(ctx: AppContext, product: dict[str, Any]) -> int:
    async with ctx.db.sessions() as session, session.begin():
        level = await session.scalar(
            select(StockLevel).where(StockLevel.product_id == uuid.UUID(product["id"]))
        )
    assert level is not None
    return level.reserved


def assert_in_progress(response: httpx.Response) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "idempotency_key_in_progress"
    assert response.headers["Retry-After"] == "1"  # told when to come back


async def test_twenty_copies_of_one_request_create_one_order(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    product, _ = await stocked_product(client, staff, 10)
    body = order_body(product, 2)

    responses = await asyncio.gather(
        *(place(client, customer, "checkout-42", body) for _ in range(COPIES))
    )

    originals = [
        r for r in responses if r.status_code == 201 and r.headers["Idempotent-Replayed"] == "false"
    ]
    replays = [
        r for r in responses if r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"
    ]
    busy = [r for r in responses if r.status_code != 201]
    # How many replays and how many "in progress" depends on timing; that every copy is
    # one of the three, and exactly one did the work, does not.
    assert len(originals) == 1, [r.text for r in responses]
    assert len(originals) + len(replays) + len(busy) == COPIES
    for response in busy:
        assert_in_progress(response)
    [original] = originals
    order = original.json()
    for replay in replays:
        assert replay.json() == order
        assert replay.headers["Location"] == original.headers["Location"]

    assert await order_count(ctx) == 1
    assert await reserved_of(ctx, product) == 2
    async with ctx.db.sessions() as session, session.begin():
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1

    # Once settled, the key replays for good; a different request under it is refused.
    later = await place(client, customer, "checkout-42", body)
    assert (later.status_code, later.headers["Idempotent-Replayed"]) == (201, "true")
    assert later.json()["id"] == order["id"]
    reused = await place(client, customer, "checkout-42", order_body(product, 3))
    assert reused.status_code == 422, reused.text
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await order_count(ctx) == 1
    assert await reserved_of(ctx, product) == 2


async def test_keys_belong_to_their_caller(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    """Two callers racing with the same key string are two operations, not one."""
    other = await make_user(ctx, Role.CUSTOMER)
    product, _ = await stocked_product(client, staff, 10)
    body = order_body(product, 1)
    first, second = await asyncio.gather(
        place(client, customer, "shared-key", body), place(client, other, "shared-key", body)
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert await order_count(ctx) == 2


@pytest.mark.parametrize("at_location", [False, True], ids=["general-path", "fast-path"])
async def test_retry_while_the_first_attempt_is_still_running_ends_with_one_order(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    customer: dict[str, Any],
    database_url: str,
    at_location: bool,
) -> None:
    """A client times out and retries while its first request is still inside its
    transaction. The retry must neither queue behind it nor create a second order.

    With a location (the fast path), the retry's reservation travels in the same round
    trip as its idempotency claim, before the claim is read (docs/decisions/0035): it
    must not wait for the row lock the first attempt is queued on either."""
    product, location = await stocked_product(client, staff, 5)
    async with ctx.db.sessions() as session, session.begin():
        level_id = await session.scalar(
            select(StockLevel.id).where(StockLevel.product_id == uuid.UUID(product["id"]))
        )
    where = {"location_id": location["id"]} if at_location else {}
    body = {**order_body(product, 2), **where}
    key = "slow-checkout"

    # Another transaction holds the level's row lock, so the first order request stops
    # inside its transaction at the reserving UPDATE, holding the key's advisory lock.
    blocker = await psycopg.AsyncConnection.connect(database_url)
    watcher = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    first: asyncio.Task[httpx.Response] | None = None
    try:
        await blocker.execute("SELECT id FROM stock_levels WHERE id = %s FOR UPDATE", (level_id,))
        blocker_pid = blocker.info.backend_pid
        first = asyncio.create_task(place(client, customer, key, body))

        async def first_is_waiting_on_the_lock() -> bool:
            assert first is not None
            assert not first.done(), first.result().text
            # Only the first request can wait on the blocker (its statement's text may
            # be a whole batch, docs/decisions/0041, so it is not matched on).
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (blocker_pid,),
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 1

        await wait_until(
            first_is_waiting_on_the_lock, what="the first request to block on the row lock"
        )

        # The retry is answered at once (a hang would hit the deadline, not pass).
        retry = await asyncio.wait_for(place(client, customer, key, body), timeout=10)
        assert_in_progress(retry)
        # Even a different body is only told to wait: the key's first use is undecided.
        other_body = await asyncio.wait_for(
            place(client, customer, key, {**order_body(product, 1), **where}), timeout=10
        )
        assert_in_progress(other_body)
        assert not first.done()
        assert await order_count(ctx) == 0

        await blocker.rollback()
        finished = await asyncio.wait_for(first, timeout=10)
        assert finished.status_code == 201, finished.text
        assert finished.headers["Idempotent-Replayed"] == "false"
    finally:
        await blocker.close()
        await watcher.close()
        if first is not None and not first.done():
            first.cancel()

    replay = await place(client, customer, key, body)
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == finished.json()
    assert await order_count(ctx) == 1
    assert await reserved_of(ctx, product) == 2
