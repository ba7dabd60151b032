"""Many concurrent stock adjustments on one stock level, through the real HTTP app.

The service promises that every change is one conditional UPDATE serialised on the row
lock, written to the ledger in the same transaction. Under contention that must mean: no
lost update, no oversell, a clean 409 for what does not fit, never a 5xx, and a level that
still equals the sum of its ledger. Idempotency keys must hold under the same contention.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from typing import Any

import httpx
from sqlalchemy import func, select

from shelfwise.context import AppContext
from shelfwise.inventory import service as inventory
from shelfwise.inventory.models import StockLevel, StockMovement
from tests.support import create_location, create_product, receive_stock

INITIAL = 100


def adjustment(product: dict[str, Any], location: dict[str, Any], quantity: int) -> dict[str, Any]:
    return {
        "product_id": product["id"],
        "location_id": location["id"],
        "kind": "receipt" if quantity > 0 else "adjustment",
        "quantity": quantity,
        "reason": "concurrency test",
    }


async def stocked_level(
    client: httpx.AsyncClient, headers: dict[str, str], on_hand: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    product = await create_product(client, headers)
    location = await create_location(client, headers)
    response = await receive_stock(client, headers, product["id"], location["id"], on_hand)
    assert response.status_code == 201, response.text
    return product, location


async def ledger_totals(ctx: AppContext, product_id: str) -> tuple[StockLevel, int, int]:
    """The level, the sum of its ledger's on_hand deltas, and its number of movements."""
    async with ctx.db.sessions() as session, session.begin():
        level = (
            await session.scalars(
                select(StockLevel).where(StockLevel.product_id == uuid.UUID(product_id))
            )
        ).one()
        total, count = (
            await session.execute(
                select(func.coalesce(func.sum(StockMovement.on_hand_delta), 0), func.count()).where(
                    StockMovement.stock_level_id == level.id
                )
            )
        ).one()
    return level, int(total), int(count)


async def assert_no_drift(ctx: AppContext) -> None:
    async with ctx.db.sessions() as session:
        assert await inventory.reconcile(session) == []


async def test_fifty_concurrent_adjustments_keep_the_level_equal_to_its_ledger(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    product, location = await stocked_level(client, staff["headers"], INITIAL)
    # 20 receipts, 25 removals that fit in any order (the initial stock alone covers them,
    # and receipts only add), and 5 removals that can never fit, whatever the order.
    receipts = [3 + i % 4 for i in range(20)]
    removals = [-4] * 25
    impossible = [-10_000] * 5
    quantities = receipts + removals + impossible
    random.Random(20260115).shuffle(quantities)
    assert len(quantities) == 50
    assert -sum(removals) <= INITIAL
    assert INITIAL + sum(receipts) < 10_000

    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/stock/adjustments",
                json=adjustment(product, location, q),
                headers=staff["headers"],
            )
            for q in quantities
        )
    )

    statuses = [r.status_code for r in responses]
    assert not [s for s in statuses if s >= 500], statuses
    succeeded = [q for q, r in zip(quantities, responses, strict=True) if r.status_code == 201]
    refused = [(q, r) for q, r in zip(quantities, responses, strict=True) if r.status_code != 201]
    assert sorted(succeeded) == sorted(receipts + removals)
    assert [q for q, _ in refused] == impossible
    for _, response in refused:
        assert response.status_code == 409
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "insufficient_stock"
        assert problem["lines"][0]["requested"] == 10_000
        assert 0 <= problem["lines"][0]["available"] <= INITIAL + sum(receipts)

    # Every success saw a distinct version of the row: no two updates read the same state.
    levels_seen = [r.json()["level"] for r in responses if r.status_code == 201]
    versions = sorted(level["version"] for level in levels_seen)
    assert versions == list(range(3, 3 + len(succeeded)))  # 1 created, 2 after the receipt
    assert all(level["on_hand"] >= 0 for level in levels_seen)

    expected = INITIAL + sum(succeeded)
    level, ledger_on_hand, movements = await ledger_totals(ctx, product["id"])
    assert level.on_hand == expected == ledger_on_hand
    assert level.reserved == 0
    assert level.version == 2 + len(succeeded)
    assert movements == 1 + len(succeeded)
    await assert_no_drift(ctx)

    listed = await client.get(
        "/v1/stock", params={"product_id": product["id"]}, headers=staff["headers"]
    )
    assert listed.json()["data"][0]["on_hand"] == expected


async def test_concurrent_removals_never_oversell(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    """30 removals of 10 race for 100 units: exactly 10 win, 20 get a clean 409."""
    product, location = await stocked_level(client, staff["headers"], INITIAL)
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/stock/adjustments",
                json=adjustment(product, location, -10),
                headers=staff["headers"],
            )
            for _ in range(30)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] * 10 + [409] * 20
    assert {r.json()["code"] for r in responses if r.status_code == 409} == {"insufficient_stock"}
    on_hands = sorted(r.json()["level"]["on_hand"] for r in responses if r.status_code == 201)
    assert on_hands == list(range(0, INITIAL, 10))  # each success saw the previous one

    level, ledger_on_hand, movements = await ledger_totals(ctx, product["id"])
    assert (level.on_hand, ledger_on_hand, level.reserved, movements) == (0, 0, 0, 11)
    await assert_no_drift(ctx)


async def test_same_idempotency_key_concurrently_moves_stock_once(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    product, location = await stocked_level(client, staff["headers"], INITIAL)
    body = adjustment(product, location, 7)
    headers = {**staff["headers"], "Idempotency-Key": f"receipt-{uuid.uuid4()}"}

    responses = await asyncio.gather(
        *(client.post("/v1/stock/adjustments", json=body, headers=headers) for _ in range(12))
    )

    assert not [r.status_code for r in responses if r.status_code >= 500]
    fresh = [
        r for r in responses if r.status_code == 201 and r.headers["idempotent-replayed"] == "false"
    ]
    replays = [
        r for r in responses if r.status_code == 201 and r.headers["idempotent-replayed"] == "true"
    ]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1, [(r.status_code, r.text) for r in responses]
    assert len(fresh) + len(replays) + len(in_progress) == len(responses)
    for replay in replays:
        assert replay.json() == fresh[0].json()
    for response in in_progress:
        assert response.json()["code"] == "idempotency_key_in_progress"

    # Settled: a retry now is always a replay of the one result.
    retry = await client.post("/v1/stock/adjustments", json=body, headers=headers)
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == fresh[0].json()

    level, ledger_on_hand, movements = await ledger_totals(ctx, product["id"])
    assert movements == 2  # the initial receipt and exactly one of the twelve
    assert level.on_hand == ledger_on_hand == INITIAL + 7
    await assert_no_drift(ctx)


async def test_idempotency_key_reuse_and_malformed_keys_are_refused(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    product, location = await stocked_level(client, staff["headers"], INITIAL)
    key = f"adjust-{uuid.uuid4()}"
    headers = {**staff["headers"], "Idempotency-Key": key}
    first = await client.post(
        "/v1/stock/adjustments", json=adjustment(product, location, 5), headers=headers
    )
    assert first.status_code == 201, first.text

    reused = await client.post(
        "/v1/stock/adjustments", json=adjustment(product, location, 6), headers=headers
    )
    assert reused.status_code == 422
    assert reused.headers["content-type"].startswith("application/problem+json")
    assert reused.json()["code"] == "idempotency_key_reused"

    # The same body with different JSON spacing and key order is the same request.
    respaced = json.dumps(dict(reversed(adjustment(product, location, 5).items())), indent=3)
    replay = await client.post(
        "/v1/stock/adjustments",
        content=respaced,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()

    for malformed in ("", "has spaces in it", "x" * 256, "tab\there"):
        response = await client.post(
            "/v1/stock/adjustments",
            json=adjustment(product, location, 1),
            headers={**staff["headers"], "Idempotency-Key": malformed},
        )
        assert response.status_code in (400, 422), (malformed, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["field"] == "header.Idempotency-Key"

    level, ledger_on_hand, movements = await ledger_totals(ctx, product["id"])
    assert movements == 2  # the initial receipt and the first keyed one; nothing else
    assert level.on_hand == ledger_on_hand == INITIAL + 5
    await assert_no_drift(ctx)
