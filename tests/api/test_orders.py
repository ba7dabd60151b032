"""Order lifecycle through the HTTP API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from prometheus_client import REGISTRY

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.orders.expiry import expire_reservations
from shelfwise.reconciliation import reconcile_all
from tests.support import create_location, create_product, receive_stock


async def stocked_product(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    quantity: int,
    location: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    product = await create_product(client, staff["headers"])
    location = location or await create_location(client, staff["headers"])
    response = await receive_stock(
        client, staff["headers"], product["id"], location["id"], quantity
    )
    assert response.status_code == 201, response.text
    return product, location


async def place(
    client: httpx.AsyncClient,
    user: dict[str, Any],
    lines: list[tuple[str, int]],
    key: str | None = None,
    **extra: Any,
) -> httpx.Response:
    body = {"lines": [{"product_id": p, "quantity": q} for p, q in lines], **extra}
    headers = {**user["headers"], "Idempotency-Key": key or uuid.uuid4().hex}
    return await client.post("/v1/orders", json=body, headers=headers)


async def level(
    client: httpx.AsyncClient, staff: dict[str, Any], product_id: str
) -> dict[str, Any]:
    response = await client.get(
        "/v1/stock", params={"product_id": product_id}, headers=staff["headers"]
    )
    [row] = response.json()["data"]
    return dict(row)


async def test_reserve_confirm_fulfil(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any], ctx: AppContext
) -> None:
    product, _ = await stocked_product(client, staff, 10)
    response = await place(client, customer, [(product["id"], 3)])
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "reserved"
    assert order["total_minor"] == 3 * product["price_minor"]
    assert response.headers["Location"].endswith(f"/v1/orders/{order['id']}")
    assert (await level(client, staff, product["id"]))["reserved"] == 3

    confirmed = await client.post(f"/v1/orders/{order['id']}/confirm", headers=customer["headers"])
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "confirmed"
    after = await level(client, staff, product["id"])
    assert (after["on_hand"], after["reserved"]) == (7, 0)

    assert (
        await client.post(f"/v1/orders/{order['id']}/fulfil", headers=customer["headers"])
    ).status_code == 403
    fulfilled = await client.post(f"/v1/orders/{order['id']}/fulfil", headers=staff["headers"])
    assert fulfilled.json()["status"] == "fulfilled"
    again = await client.post(f"/v1/orders/{order['id']}/cancel", headers=staff["headers"])
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"
    async with ctx.db.sessions() as session:
        assert (await reconcile_all(session)).clean


async def test_insufficient_stock_reserves_nothing(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    plenty, location = await stocked_product(client, staff, 10)
    scarce, _ = await stocked_product(client, staff, 1, location)
    response = await place(client, customer, [(plenty["id"], 2), (scarce["id"], 5)])
    assert response.status_code == 409
    problem = response.json()
    assert problem["code"] == "insufficient_stock"
    assert {"product_id": scarce["id"], "requested": 5, "available": 1} in problem["lines"]
    assert (await level(client, staff, plenty["id"]))["reserved"] == 0


async def test_idempotency_key_required_and_replayed(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    product, _ = await stocked_product(client, staff, 5)
    body = {"lines": [{"product_id": product["id"], "quantity": 1}]}
    missing = await client.post("/v1/orders", json=body, headers=customer["headers"])
    assert missing.status_code == 400
    assert missing.json()["code"] == "idempotency_key_missing"

    first = await place(client, customer, [(product["id"], 1)], key="order-1")
    second = await place(client, customer, [(product["id"], 1)], key="order-1")
    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert (await level(client, staff, product["id"]))["reserved"] == 1
    different = await place(client, customer, [(product["id"], 2)], key="order-1")
    assert different.status_code == 422
    assert different.json()["code"] == "idempotency_key_reused"


async def test_placed_order_answers_what_was_stored(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    """Placement reads nothing back after writing the order (its times are the
    reservation's, its version 1, docs/decisions/0035): the 201 and a later read agree,
    on the fast path (one line at a location) and the general one."""
    product, location = await stocked_product(client, staff, 5)
    fast = await place(client, customer, [(product["id"], 1)], location_id=location["id"])
    general = await place(client, customer, [(product["id"], 1)])
    for placed in (fast, general):
        assert placed.status_code == 201, placed.text
        stored = await client.get(f"/v1/orders/{placed.json()['id']}", headers=customer["headers"])
        assert stored.json() == placed.json()
        assert placed.json()["version"] == 1
        assert placed.json()["created_at"] == placed.json()["updated_at"]
    assert fast.json()["created_at"] < general.json()["created_at"]


async def test_other_customers_order_is_404(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any], ctx: AppContext
) -> None:
    from shelfwise.identity.models import Role
    from tests.support import make_user

    other = await make_user(ctx, Role.CUSTOMER)
    product, _ = await stocked_product(client, staff, 5)
    order = (await place(client, customer, [(product["id"], 1)])).json()
    for method, path in [("GET", ""), ("POST", "/confirm"), ("POST", "/cancel")]:
        response = await client.request(
            method, f"/v1/orders/{order['id']}{path}", headers=other["headers"]
        )
        assert response.status_code == 404, (method, path)
    mine = await client.get("/v1/orders", headers=other["headers"])
    assert mine.json()["data"] == []
    assert len((await client.get("/v1/orders", headers=staff["headers"])).json()["data"]) == 1


async def test_cancel_releases_or_restocks(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    product, _ = await stocked_product(client, staff, 5)
    reserved = (await place(client, customer, [(product["id"], 2)])).json()
    await client.post(f"/v1/orders/{reserved['id']}/cancel", headers=customer["headers"])
    assert (await level(client, staff, product["id"]))["reserved"] == 0

    confirmed = (await place(client, customer, [(product["id"], 2)])).json()
    await client.post(f"/v1/orders/{confirmed['id']}/confirm", headers=customer["headers"])
    assert (await level(client, staff, product["id"]))["on_hand"] == 3
    cancelled = await client.post(
        f"/v1/orders/{confirmed['id']}/cancel", headers=customer["headers"]
    )
    assert cancelled.json()["status"] == "cancelled"
    assert (await level(client, staff, product["id"]))["on_hand"] == 5


async def test_reservations_expire_exactly_once(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    ctx: AppContext,
    clock: FixedClock,
) -> None:
    product, _ = await stocked_product(client, staff, 5)
    order = (await place(client, customer, [(product["id"], 4)])).json()
    async with ctx.db.sessions() as session:
        assert await expire_reservations(session, now=clock.now()) == 0
    clock.advance(timedelta(minutes=15))
    # Access tokens (10 min) expired too; sign both in again.
    customer, staff = (
        {
            **user,
            "headers": {
                "Authorization": "Bearer "
                + ctx.tokens.issue(user_id=user["id"], role=role, now=clock.now())[0]
            },
        }
        for user, role in ((customer, "customer"), (staff, "staff"))
    )
    confirm = await client.post(f"/v1/orders/{order['id']}/confirm", headers=customer["headers"])
    assert confirm.status_code == 409
    assert confirm.json()["code"] == "reservation_expired"
    async with ctx.db.sessions() as session:
        assert await expire_reservations(session, now=clock.now()) == 1
        assert await expire_reservations(session, now=clock.now()) == 0
        assert (await reconcile_all(session)).clean
    assert (await level(client, staff, product["id"]))["reserved"] == 0
    got = await client.get(f"/v1/orders/{order['id']}", headers=customer["headers"])
    assert got.json()["status"] == "expired"


async def test_location_choice_picks_single_location_with_most_stock(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    a = await create_location(client, staff["headers"])
    b = await create_location(client, staff["headers"])
    mug, _ = await stocked_product(client, staff, 2, a)
    await receive_stock(client, staff["headers"], mug["id"], b["id"], 9)
    lamp, _ = await stocked_product(client, staff, 3, a)
    # Only location a has both products: the order goes there despite b's larger stock.
    both = (await place(client, customer, [(mug["id"], 1), (lamp["id"], 1)])).json()
    assert {line["location_id"] for line in both["lines"]} == {a["id"]}
    # One product in both: the location with more unreserved units wins.
    single = (await place(client, customer, [(mug["id"], 1)])).json()
    assert single["lines"][0]["location_id"] == b["id"]
    # An explicit location is honoured, and refused when it lacks stock.
    pinned = await place(client, customer, [(mug["id"], 5)], location_id=a["id"])
    assert pinned.status_code == 409


async def test_transfer_moves_available_stock(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product, source = await stocked_product(client, staff, 6)
    target = await create_location(client, staff["headers"])
    body = {
        "product_id": product["id"],
        "from_location_id": source["id"],
        "to_location_id": target["id"],
        "quantity": 4,
        "reason": "rebalance",
    }
    headers = {**staff["headers"], "Idempotency-Key": "move-1"}
    moved = await client.post("/v1/stock/transfers", json=body, headers=headers)
    assert moved.status_code == 201, moved.text
    assert (moved.json()["source"]["on_hand"], moved.json()["destination"]["on_hand"]) == (2, 4)
    replay = await client.post("/v1/stock/transfers", json=body, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    too_many = await client.post(
        "/v1/stock/transfers", json={**body, "quantity": 3}, headers=staff["headers"]
    )
    assert too_many.status_code == 409
    same = await client.post(
        "/v1/stock/transfers",
        json={**body, "to_location_id": source["id"]},
        headers=staff["headers"],
    )
    assert same.status_code == 422


async def test_refused_orders_are_counted_by_reason(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    def refused(reason: str) -> float:
        return REGISTRY.get_sample_value("shelfwise_orders_total", {"outcome": reason}) or 0.0

    product, _ = await stocked_product(client, staff, 1)
    before = {r: refused(r) for r in ("unknown_product", "location_not_found")}
    unknown = await place(client, customer, [(str(uuid.uuid4()), 1)])
    assert unknown.status_code == 422, unknown.text
    nowhere = await place(client, customer, [(product["id"], 1)], location_id=str(uuid.uuid4()))
    assert nowhere.status_code == 404, nowhere.text
    assert refused("unknown_product") == before["unknown_product"] + 1
    assert refused("location_not_found") == before["location_not_found"] + 1
