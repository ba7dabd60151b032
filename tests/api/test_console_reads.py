"""The read endpoints the staff console needs: stock with names, and who placed orders."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shelfwise.context import AppContext
from tests.support import create_location, create_product, receive_stock


async def test_stock_overview_names_filters_and_pages(
    client: httpx.AsyncClient, staff: dict[str, Any], ctx: AppContext
) -> None:
    headers = staff["headers"]
    tag = uuid.uuid4().hex[:6]
    lamp = await create_product(client, headers, sku=f"LAMP-{tag}", name=f"Desk lamp {tag}")
    mug = await create_product(client, headers, sku=f"MUG-{tag}", name=f"Blue mug {tag}")
    north = await create_location(client, headers, code=f"N-{tag}")
    south = await create_location(client, headers, code=f"S-{tag}")
    threshold = ctx.settings.low_stock_threshold
    for product, location, n in (
        (lamp, north, threshold + 10),
        (lamp, south, 1),
        (mug, north, threshold + 3),
    ):
        assert (await receive_stock(client, headers, product["id"], location["id"], n)).is_success

    response = await client.get("/v1/stock/overview", params={"q": tag}, headers=headers)
    assert response.status_code == 200, response.text
    assert int(response.headers["X-Stream-Position"]) >= 0
    rows = response.json()["data"]
    assert [(r["sku"], r["location_code"]) for r in rows] == [
        (f"LAMP-{tag}", f"N-{tag}"),
        (f"LAMP-{tag}", f"S-{tag}"),
        (f"MUG-{tag}", f"N-{tag}"),
    ]
    assert rows[0]["product_name"] == f"Desk lamp {tag}"
    assert rows[0]["location_name"] == "Test location"
    assert [r["low"] for r in rows] == [False, True, False]
    assert rows[1]["available"] == 1

    # Search by a name word, by location, low stock only.
    only_mug = await client.get("/v1/stock/overview", params={"q": "blue mug"}, headers=headers)
    assert [r["sku"] for r in only_mug.json()["data"]] == [f"MUG-{tag}"]
    at_south = await client.get(
        "/v1/stock/overview", params={"location_id": south["id"]}, headers=headers
    )
    assert [r["sku"] for r in at_south.json()["data"]] == [f"LAMP-{tag}"]
    low = await client.get("/v1/stock/overview", params={"q": tag, "low": "true"}, headers=headers)
    assert [(r["sku"], r["location_code"]) for r in low.json()["data"]] == [
        (f"LAMP-{tag}", f"S-{tag}")
    ]

    # Keyset pages walk the same rows, once each; a cursor from another filter is refused.
    walked, cursor = [], None
    while True:
        params = {"q": tag, "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/stock/overview", params=params, headers=headers)).json()
        walked += [r["id"] for r in page["data"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert walked == [r["id"] for r in rows]
    first = (
        await client.get("/v1/stock/overview", params={"q": tag, "limit": "1"}, headers=headers)
    ).json()
    other = await client.get(
        "/v1/stock/overview", params={"cursor": first["next_cursor"]}, headers=headers
    )
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")


async def test_contacts_name_who_placed_orders(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    response = await client.get(
        "/v1/users/contacts",
        params=[("id", str(customer["id"])), ("id", str(uuid.uuid4()))],
        headers=staff["headers"],
    )
    assert response.status_code == 200, response.text
    assert response.json() == [
        {"id": str(customer["id"]), "email": customer["email"], "full_name": ""}
    ]
    too_many = [("id", str(uuid.uuid4())) for _ in range(101)]
    refused = await client.get("/v1/users/contacts", params=too_many, headers=staff["headers"])
    assert refused.status_code == 422
    customer_asks = await client.get(
        "/v1/users/contacts", params={"id": str(customer["id"])}, headers=customer["headers"]
    )
    assert customer_asks.status_code == 403
