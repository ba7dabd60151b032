"""Locations, stock adjustments, idempotency keys, levels, the ledger and its invariants."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shelfwise.context import AppContext
from shelfwise.inventory import service as inventory
from tests.support import create_location, create_product, receive_stock

PROBLEM = "application/problem+json"


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == PROBLEM, response.text
    return str(response.json()["code"])


def adjustment(
    product_id: str, location_id: str, quantity: int, kind: str = "adjustment", **extra: Any
) -> dict[str, Any]:
    return {
        "product_id": product_id,
        "location_id": location_id,
        "kind": kind,
        "quantity": quantity,
        "reason": "cycle count",
        **extra,
    }


async def adjust(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    body: dict[str, Any],
    key: str | None = None,
) -> httpx.Response:
    if key is not None:
        headers = {**headers, "Idempotency-Key": key}
    return await client.post("/v1/stock/adjustments", json=body, headers=headers)


async def ledger_count(ctx: AppContext, product_id: str) -> int:
    async with ctx.db.engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM stock_movements WHERE product_id = :p"), {"p": product_id}
        )
    return int(count or 0)


async def levels(client: httpx.AsyncClient, headers: dict[str, str], **params: str) -> list[Any]:
    response = await client.get("/v1/stock", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def assert_ledger_reconciles(ctx: AppContext) -> None:
    async with ctx.db.sessions() as session:
        assert await inventory.reconcile(session) == []


@pytest.fixture
async def stocked(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A product with 10 units received at a location."""
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    response = await receive_stock(client, staff["headers"], product["id"], location["id"], 10)
    assert response.status_code == 201, response.text
    return product, location


# -- locations ---------------------------------------------------------------------------


async def test_location_create_list_get(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/locations",
        json={"code": "WH-B", "name": "  Back warehouse ", "kind": "store"},
        headers=staff["headers"],
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["code"], created["name"], created["kind"]) == (
        "WH-B",
        "Back warehouse",
        "store",
    )
    assert response.headers["location"].endswith(f"/v1/locations/{created['id']}")
    other = await create_location(client, staff["headers"], code="WH-A")

    listed = await client.get("/v1/locations", headers=staff["headers"])
    assert listed.status_code == 200
    assert [loc["code"] for loc in listed.json()["data"]] == ["WH-A", "WH-B"]  # by code
    assert "no-store" in listed.headers["cache-control"]

    fetched = await client.get(f"/v1/locations/{other['id']}", headers=staff["headers"])
    assert fetched.status_code == 200
    assert fetched.json() == other


async def test_locations_paginate_by_code(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    codes = [f"P-{i:02d}" for i in range(5)]
    for code in reversed(codes):
        await create_location(client, staff["headers"], code=code)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/locations", params=params, headers=staff["headers"])).json()
        seen.extend(loc["code"] for loc in page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == codes


async def test_duplicate_location_code_is_409(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    await create_location(client, staff["headers"], code="DUP-1")
    response = await client.post(
        "/v1/locations", json={"code": "DUP-1", "name": "Again"}, headers=staff["headers"]
    )
    assert response.status_code == 409
    assert problem_code(response) == "location_code_taken"


async def test_unknown_location_is_404(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    response = await client.get(f"/v1/locations/{uuid.uuid4()}", headers=staff["headers"])
    assert response.status_code == 404
    assert problem_code(response) == "location_not_found"


@pytest.mark.parametrize("code", ["", "-starts-with-dash", "has space", "x" * 33, "ünï"])
async def test_invalid_location_code_is_422(
    client: httpx.AsyncClient, staff: dict[str, Any], code: str
) -> None:
    response = await client.post(
        "/v1/locations", json={"code": code, "name": "Bad"}, headers=staff["headers"]
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.code"]


async def test_location_permissions(
    client: httpx.AsyncClient, customer: dict[str, Any], staff: dict[str, Any]
) -> None:
    body = {"code": "PERM-1", "name": "Nope"}
    assert (
        await client.post("/v1/locations", json=body, headers=customer["headers"])
    ).status_code == 403
    assert (await client.get("/v1/locations")).status_code == 401
    assert (await client.get("/v1/locations", headers=customer["headers"])).status_code == 200


# -- adjustments -------------------------------------------------------------------------


async def test_receipt_creates_level_and_ledger_row(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    response = await adjust(
        client,
        staff["headers"],
        adjustment(product["id"], location["id"], 12, kind="receipt", reference="PO-7"),
    )
    assert response.status_code == 201, response.text
    assert response.headers["idempotent-replayed"] == "false"
    body = response.json()
    movement, level = body["movement"], body["level"]
    assert (movement["kind"], movement["on_hand_delta"], movement["reserved_delta"]) == (
        "receipt",
        12,
        0,
    )
    assert movement["reference"] == "PO-7"
    assert movement["actor_id"] == str(staff["id"])
    assert movement["stock_level_id"] == level["id"]
    assert (level["on_hand"], level["reserved"], level["available"]) == (12, 0, 12)

    more = await adjust(client, staff["headers"], adjustment(product["id"], location["id"], -5))
    assert more.status_code == 201
    assert more.json()["level"]["on_hand"] == 7
    assert more.json()["level"]["version"] == level["version"] + 1
    assert await ledger_count(ctx, product["id"]) == 2
    await assert_ledger_reconciles(ctx)


async def test_removing_more_than_available_is_409_with_lines(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    response = await adjust(
        client, staff["headers"], adjustment(product["id"], location["id"], -11)
    )
    assert response.status_code == 409
    assert problem_code(response) == "insufficient_stock"
    assert response.json()["lines"] == [
        {
            "product_id": product["id"],
            "location_id": location["id"],
            "requested": 11,
            "available": 10,
        }
    ]
    # Nothing changed: no ledger row, level as it was.
    assert await ledger_count(ctx, product["id"]) == 1
    [level] = await levels(client, staff["headers"], product_id=product["id"])
    assert level["on_hand"] == 10

    exact = await adjust(client, staff["headers"], adjustment(product["id"], location["id"], -10))
    assert exact.status_code == 201
    assert exact.json()["level"]["on_hand"] == 0


async def test_reserved_units_are_not_available_for_removal(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE stock_levels SET reserved = 4 WHERE product_id = :p"), {"p": product["id"]}
        )
    response = await adjust(client, staff["headers"], adjustment(product["id"], location["id"], -7))
    assert response.status_code == 409
    assert response.json()["lines"][0]["available"] == 6
    assert (
        await adjust(client, staff["headers"], adjustment(product["id"], location["id"], -6))
    ).status_code == 201


async def test_removing_from_a_location_never_stocked_is_409(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    response = await adjust(client, staff["headers"], adjustment(product["id"], location["id"], -1))
    assert response.status_code == 409
    assert response.json()["lines"][0]["available"] == 0


@pytest.mark.parametrize(
    ("kind", "quantity"),
    [("receipt", -3), ("receipt", 0), ("adjustment", 0), ("receipt", 1_000_001), ("move", 1)],
)
async def test_invalid_quantities_and_kinds_are_422(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
    kind: str,
    quantity: int,
) -> None:
    product, location = stocked
    response = await adjust(
        client, staff["headers"], adjustment(product["id"], location["id"], quantity, kind=kind)
    )
    assert response.status_code == 422
    assert problem_code(response) == "validation_failed"
    assert await ledger_count(ctx, product["id"]) == 1


@pytest.mark.parametrize("reason", ["", "   "])
async def test_reason_is_required(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
    reason: str,
) -> None:
    product, location = stocked
    response = await adjust(
        client, staff["headers"], {**adjustment(product["id"], location["id"], 1), "reason": reason}
    )
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.reason"]


async def test_unknown_product_or_location_is_404(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    ghost = str(uuid.uuid4())
    response = await adjust(client, staff["headers"], adjustment(ghost, location["id"], 1))
    assert response.status_code == 404
    assert problem_code(response) == "product_not_found"

    response = await adjust(client, staff["headers"], adjustment(product["id"], ghost, 1))
    assert response.status_code == 404
    assert problem_code(response) == "location_not_found"

    assert len(await levels(client, staff["headers"])) == 1  # no level was created


async def test_adjustment_permissions(
    client: httpx.AsyncClient,
    customer: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    body = adjustment(product["id"], location["id"], 1)
    assert (await adjust(client, customer["headers"], body)).status_code == 403
    assert (await adjust(client, {}, body)).status_code == 401
    # Customers may read levels but not the ledger.
    assert (await client.get("/v1/stock", headers=customer["headers"])).status_code == 200
    assert (await client.get("/v1/stock/movements", headers=customer["headers"])).status_code == 403


# -- idempotency -------------------------------------------------------------------------


async def test_same_key_same_body_is_replayed_once(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    body = adjustment(product["id"], location["id"], 5, kind="receipt")
    first = await adjust(client, staff["headers"], body, key="receipt-0001")
    assert first.status_code == 201
    assert first.headers["idempotent-replayed"] == "false"

    second = await adjust(client, staff["headers"], body, key="receipt-0001")
    assert second.status_code == 201
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()

    # Same request, different JSON spelling (order and spacing): still the same request.
    respelled = await client.post(
        "/v1/stock/adjustments",
        content=json.dumps(dict(reversed(list(body.items()))), indent=3),
        headers={
            **staff["headers"],
            "Idempotency-Key": "receipt-0001",
            "Content-Type": "application/json",
        },
    )
    assert respelled.status_code == 201, respelled.text
    assert respelled.headers["idempotent-replayed"] == "true"
    assert respelled.json() == first.json()

    assert await ledger_count(ctx, product["id"]) == 2  # the stocking receipt + this one
    [level] = await levels(client, staff["headers"], product_id=product["id"])
    assert level["on_hand"] == 15
    await assert_ledger_reconciles(ctx)


async def test_same_key_different_body_is_422(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    first = await adjust(
        client, staff["headers"], adjustment(product["id"], location["id"], 2), key="k-reuse-1"
    )
    assert first.status_code == 201
    reused = await adjust(
        client, staff["headers"], adjustment(product["id"], location["id"], 3), key="k-reuse-1"
    )
    assert reused.status_code == 422
    assert problem_code(reused) == "idempotency_key_reused"
    assert await ledger_count(ctx, product["id"]) == 2


async def test_keys_are_scoped_per_principal(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    admin: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    body = adjustment(product["id"], location["id"], 1, kind="receipt")
    mine = await adjust(client, staff["headers"], body, key="shared-key-1")
    theirs = await adjust(client, admin["headers"], body, key="shared-key-1")
    assert mine.status_code == theirs.status_code == 201
    assert theirs.headers["idempotent-replayed"] == "false"
    assert mine.json()["movement"]["id"] != theirs.json()["movement"]["id"]
    assert theirs.json()["movement"]["actor_id"] == str(admin["id"])
    assert await ledger_count(ctx, product["id"]) == 3


async def test_failed_request_is_not_remembered(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    body = adjustment(product["id"], location["id"], -15)
    refused = await adjust(client, staff["headers"], body, key="retry-later-1")
    assert refused.status_code == 409
    await receive_stock(client, staff["headers"], product["id"], location["id"], 5)
    retried = await adjust(client, staff["headers"], body, key="retry-later-1")
    assert retried.status_code == 201
    assert retried.headers["idempotent-replayed"] == "false"
    assert retried.json()["level"]["on_hand"] == 0


@pytest.mark.parametrize("key", ["has space", "x" * 256, "tab\there"])
async def test_malformed_idempotency_key_is_422(
    client: httpx.AsyncClient,
    ctx: AppContext,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
    key: str,
) -> None:
    product, location = stocked
    response = await adjust(
        client, staff["headers"], adjustment(product["id"], location["id"], 1), key=key
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await ledger_count(ctx, product["id"]) == 1


# -- levels and movements ----------------------------------------------------------------


async def test_levels_filter_by_product_and_location(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    headers = staff["headers"]
    mug, pot = (await create_product(client, headers), await create_product(client, headers))
    north, south = (await create_location(client, headers), await create_location(client, headers))
    quantities = {
        (mug["id"], north["id"]): 1,
        (mug["id"], south["id"]): 2,
        (pot["id"], north["id"]): 3,
    }
    for (product_id, location_id), quantity in quantities.items():
        assert (
            await receive_stock(client, headers, product_id, location_id, quantity)
        ).status_code == 201

    def summary(rows: list[Any]) -> set[tuple[str, str, int]]:
        return {(r["product_id"], r["location_id"], r["on_hand"]) for r in rows}

    everything = {(p, loc, q) for (p, loc), q in quantities.items()}
    assert summary(await levels(client, headers)) == everything
    assert summary(await levels(client, headers, product_id=mug["id"])) == {
        (mug["id"], north["id"], 1),
        (mug["id"], south["id"], 2),
    }
    assert summary(await levels(client, headers, location_id=north["id"])) == {
        (mug["id"], north["id"], 1),
        (pot["id"], north["id"], 3),
    }
    assert summary(
        await levels(client, headers, product_id=pot["id"], location_id=north["id"])
    ) == {(pot["id"], north["id"], 3)}
    assert await levels(client, headers, product_id=pot["id"], location_id=south["id"]) == []


async def test_movements_filter_by_kind_newest_first(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    stocked: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    product, location = stocked
    for quantity in (-1, -2):
        await adjust(client, staff["headers"], adjustment(product["id"], location["id"], quantity))
    await receive_stock(client, staff["headers"], product["id"], location["id"], 4)

    async def moves(**params: str) -> list[Any]:
        response = await client.get(
            "/v1/stock/movements",
            params={"product_id": product["id"], **params},
            headers=staff["headers"],
        )
        assert response.status_code == 200, response.text
        assert "no-store" in response.headers["cache-control"]
        return list(response.json()["data"])

    everything = await moves()
    assert [m["on_hand_delta"] for m in everything] == [4, -2, -1, 10]  # newest first
    assert [m["on_hand_delta"] for m in await moves(kind="adjustment")] == [-2, -1]
    assert [m["on_hand_delta"] for m in await moves(kind="receipt")] == [4, 10]
    assert await moves(kind="reserve") == []
    bad = await client.get(
        "/v1/stock/movements", params={"kind": "theft"}, headers=staff["headers"]
    )
    assert bad.status_code == 422


# -- database invariants -----------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE stock_movements SET on_hand_delta = 1000",
        "UPDATE stock_movements SET reason = 'rewritten'",
        "DELETE FROM stock_movements",
        "TRUNCATE stock_movements CASCADE",
    ],
)
async def test_ledger_is_append_only(
    ctx: AppContext,
    client: httpx.AsyncClient,
    stocked: tuple[dict[str, Any], dict[str, Any]],
    statement: str,
) -> None:
    product, _ = stocked
    with pytest.raises(IntegrityError, match="append-only"):
        async with ctx.db.engine.begin() as conn:
            await conn.execute(text(statement))
    async with ctx.db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT on_hand_delta, reason FROM stock_movements WHERE product_id = :p"),
                {"p": product["id"]},
            )
        ).one()
    assert tuple(row) == (10, "test receipt")


@pytest.mark.parametrize(
    "assignment",
    ["reserved = on_hand + 1", "reserved = -1", "on_hand = reserved - 1"],
)
async def test_check_constraint_keeps_reserved_within_on_hand(
    ctx: AppContext,
    stocked: tuple[dict[str, Any], dict[str, Any]],
    assignment: str,
) -> None:
    product, _ = stocked
    with pytest.raises(IntegrityError, match="reserved_within_on_hand"):
        async with ctx.db.engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE stock_levels SET {assignment} WHERE product_id = :p"),
                {"p": product["id"]},
            )
    async with ctx.db.engine.begin() as conn:
        # The boundary itself is allowed: everything on hand may be reserved.
        await conn.execute(
            text("UPDATE stock_levels SET reserved = on_hand WHERE product_id = :p"),
            {"p": product["id"]},
        )
