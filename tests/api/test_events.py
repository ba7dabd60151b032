"""Every use case that changes stock, orders or products leaves its events in the outbox,
in the same transaction — and a refused change leaves none."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.orders.expiry import expire_reservations
from tests.support import create_location, create_product, receive_stock


async def events(ctx: AppContext) -> list[tuple[str, str, dict[str, Any]]]:
    """(type, aggregate id, payload) in insertion order, then forget them."""
    async with ctx.db.engine.begin() as conn:
        rows = (
            await conn.execute(
                text("SELECT type, aggregate_id, payload FROM outbox_events ORDER BY id")
            )
        ).all()
        await conn.execute(text("DELETE FROM outbox_events"))
    return [(row[0], row[1], row[2]) for row in rows]


async def test_product_lifecycle_events(
    client: httpx.AsyncClient, staff: dict[str, Any], ctx: AppContext
) -> None:
    product = await create_product(client, staff["headers"], name="Kettle")
    url = f"/v1/products/{product['id']}"
    patched = await client.patch(
        url, json={"name": "Steel kettle"}, headers={**staff["headers"], "If-Match": '"v1"'}
    )
    assert patched.status_code == 200, patched.text
    refused = await client.patch(
        url, json={"name": "Stale"}, headers={**staff["headers"], "If-Match": '"v1"'}
    )
    assert refused.status_code == 412
    assert (await client.delete(url, headers=staff["headers"])).status_code == 204

    got = await events(ctx)
    assert [(t, a) for t, a, _ in got] == [
        ("product.created", product["id"]),
        ("product.updated", product["id"]),
        ("product.deleted", product["id"]),
    ]
    assert got[1][2]["name"] == "Steel kettle"
    assert got[1][2]["version"] == 2


async def test_stock_and_order_events_carry_levels_after_the_change(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    ctx: AppContext,
    clock: FixedClock,
) -> None:
    product = await create_product(client, staff["headers"])
    here = await create_location(client, staff["headers"])
    there = await create_location(client, staff["headers"])
    assert (
        await receive_stock(client, staff["headers"], product["id"], here["id"], 10)
    ).status_code == 201
    moved = await client.post(
        "/v1/stock/transfers",
        json={
            "product_id": product["id"],
            "from_location_id": here["id"],
            "to_location_id": there["id"],
            "quantity": 4,
            "reason": "rebalance",
        },
        headers=staff["headers"],
    )
    assert moved.status_code == 201, moved.text
    await events(ctx)  # creation, receipt and transfer checked below through their levels

    async def place(quantity: int) -> dict[str, Any]:
        response = await client.post(
            "/v1/orders",
            json={
                "lines": [{"product_id": product["id"], "quantity": quantity}],
                "location_id": here["id"],
            },
            headers={**customer["headers"], "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    first = await place(2)
    placed = await events(ctx)
    assert [t for t, _, _ in placed] == ["stock.changed", "order.reserved"]
    level = placed[0][2]
    assert (level["on_hand"], level["reserved"], level["available"]) == (6, 2, 4)
    assert level["cause"] == "reserve"
    assert placed[1][2]["lines"] == [
        {"product_id": product["id"], "location_id": here["id"], "quantity": 2}
    ]

    assert (
        await client.post(f"/v1/orders/{first['id']}/confirm", headers=customer["headers"])
    ).status_code == 200
    assert (
        await client.post(f"/v1/orders/{first['id']}/fulfil", headers=staff["headers"])
    ).status_code == 200
    second = await place(1)
    assert (
        await client.post(f"/v1/orders/{second['id']}/cancel", headers=customer["headers"])
    ).status_code == 200
    got_so_far = await events(ctx)
    # A refused change (not enough stock) commits nothing, so it emits nothing.
    refused = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": product["id"], "quantity": 99}]},
        headers={**customer["headers"], "Idempotency-Key": uuid.uuid4().hex},
    )
    assert refused.status_code == 409
    assert await events(ctx) == []
    third = await place(3)
    clock.advance(timedelta(hours=1))
    async with ctx.db.sessions() as session:
        assert await expire_reservations(session, now=clock.now()) == 1

    got = got_so_far + await events(ctx)
    assert [(t, p.get("status"), p.get("available")) for t, _, p in got] == [
        ("stock.changed", None, 4),  # confirm: on_hand 4, reserved 0
        ("order.confirmed", "confirmed", None),
        ("order.fulfilled", "fulfilled", None),
        ("stock.changed", None, 3),  # second order reserves 1
        ("order.reserved", "reserved", None),
        ("stock.changed", None, 4),  # cancelled: released
        ("order.cancelled", "cancelled", None),
        ("stock.changed", None, 1),  # third order reserves 3
        ("order.reserved", "reserved", None),
        ("stock.changed", None, 4),  # expired: released
        ("order.expired", "expired", None),
    ]
    assert got[-1][1] == third["id"]


async def test_adjustment_and_transfer_emit_one_event_per_level(
    client: httpx.AsyncClient, staff: dict[str, Any], ctx: AppContext
) -> None:
    product = await create_product(client, staff["headers"])
    here = await create_location(client, staff["headers"])
    there = await create_location(client, staff["headers"])
    await events(ctx)
    assert (
        await receive_stock(client, staff["headers"], product["id"], here["id"], 5)
    ).status_code == 201
    moved = await client.post(
        "/v1/stock/transfers",
        json={
            "product_id": product["id"],
            "from_location_id": here["id"],
            "to_location_id": there["id"],
            "quantity": 2,
            "reason": "rebalance",
        },
        headers=staff["headers"],
    )
    assert moved.status_code == 201, moved.text
    got = [(p["location_id"], p["on_hand"], p["cause"]) for _, _, p in await events(ctx)]
    assert got[0] == (here["id"], 5, "receipt")
    # Both legs of the transfer, one event each (in stock-level id order).
    assert sorted(got[1:]) == sorted([(here["id"], 3, "transfer"), (there["id"], 2, "transfer")])
