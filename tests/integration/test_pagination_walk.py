"""Cursor pagination walks long lists correctly while they change underneath.

A walk must return every row that existed when it started exactly once (no repeats, no
skips) whatever is inserted meanwhile, including rows whose sort key falls in the part
already walked, in the part still ahead, or exactly on the current position (ties are
broken by id). The sort keys are seeded with many ties on purpose.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tests.support import create_location, create_product

SEEDED = 600
EPOCH = datetime.fromisoformat("2026-01-01T00:00:00+00:00")

# Triples share a created_at, names repeat every 37 rows, prices every 50: ties everywhere.
SEED_PRODUCTS = f"""
INSERT INTO products (sku, name, category, price_minor, currency, created_at)
SELECT 'P-' || lpad(g::text, 5, '0'),
       'Name ' || lpad((g % 37)::text, 2, '0'),
       'walk',
       (g % 50) * 100,
       'EUR',
       '{EPOCH.isoformat()}'::timestamptz + (g / 3) * interval '1 second'
FROM generate_series(1, {SEEDED}) AS g
"""

Row = dict[str, Any]
# sort -> given the first and last rows walked so far, products to insert now and whether
# the walk may still show each: False = its key lies in the part already walked.
Inserts = Callable[[Row, Row], list[tuple[dict[str, Any], bool]]]


def _ts(row: Row) -> datetime:
    return datetime.fromisoformat(row["created_at"])


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


INSERTS: dict[str, Inserts] = {
    "created_at": lambda first, last: [
        ({"created_at": _ts(first) - timedelta(days=1)}, False),
        ({"created_at": _ts(last)}, True),  # a tie with the current position
        ({}, True),  # clock_timestamp(): after everything
    ],
    "-created_at": lambda first, last: [
        ({"created_at": _ts(first) + timedelta(days=365)}, False),
        ({"created_at": _ts(last)}, True),
        ({"created_at": EPOCH - timedelta(days=1)}, True),
    ],
    "name": lambda first, last: [
        ({"name": "AAA inserted " + _suffix()}, False),
        ({"name": last["name"]}, True),
        ({"name": "zzz inserted " + _suffix()}, True),
    ],
    "-price": lambda first, last: [
        ({"price_minor": first["price_minor"] + 1}, False),
        ({"price_minor": last["price_minor"]}, True),
        ({"price_minor": 0}, True),
    ],
    "sku": lambda first, last: [
        ({"sku": "0-" + _suffix()}, False),
        ({"sku": last["sku"] + "-" + _suffix()}, True),  # right after the current position
        ({"sku": "zz-" + _suffix()}, True),
    ],
}


async def insert_product(database_url: str, **fields: Any) -> str:
    values = {
        "sku": f"N-{uuid.uuid4().hex[:12]}",
        "name": "Inserted during walk",
        "category": "walk",
        "price_minor": 4242,
        "currency": "EUR",
        **fields,
    }
    query = sql.SQL("INSERT INTO products ({}) VALUES ({}) RETURNING id").format(
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() * len(values)),
    )
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute(query, list(values.values()))).fetchone()
    assert row is not None
    return str(row[0])


async def seed_products(database_url: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(SEED_PRODUCTS)
        rows = await (await conn.execute("SELECT id FROM products")).fetchall()
    return {str(r[0]) for r in rows}


async def database_order(database_url: str, sort: str, ids: list[str]) -> list[str]:
    column = {"price": "price_minor"}.get(sort.lstrip("-"), sort.lstrip("-"))
    direction = sql.SQL("DESC" if sort.startswith("-") else "ASC")
    query = sql.SQL("SELECT id FROM products WHERE id = ANY(%s) ORDER BY {} {}, id {}").format(
        sql.Identifier(column), direction, direction
    )
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (await conn.execute(query, ([uuid.UUID(i) for i in ids],))).fetchall()
    return [str(r[0]) for r in rows]


def check_page_headers(response: httpx.Response) -> str | None:
    """`Link: rel=next` exactly when there is a next page; returns its URL."""
    page = response.json()
    link = response.headers.get("link")
    if page["has_more"]:
        assert page["next_cursor"]
        assert link is not None
        assert link.endswith('>; rel="next"'), link
        url = link[1 : link.index(">")]
        assert f"cursor={page['next_cursor']}" in url
        return url
    assert page["next_cursor"] is None
    assert link is None, link
    return None


@pytest.mark.parametrize(
    ("sort", "limit"),
    [("created_at", 50), ("-created_at", 64), ("name", 75), ("-price", 100), ("sku", 90)],
)
async def test_walk_sees_every_existing_product_once_despite_inserts(
    client: httpx.AsyncClient, database_url: str, sort: str, limit: int
) -> None:
    existing = await seed_products(database_url)
    seen: list[str] = []
    rows: list[Row] = []
    walked_past: set[str] = set()  # inserted into the part already walked
    url: str | None = f"/v1/products?sort={sort}&limit={limit}&category=walk"
    pages = 0
    while url is not None:
        if rows:
            # The next page is fetched while the inserts for this position run.
            plans = INSERTS[sort](rows[0], rows[-1])
            fetch = client.get(url)
            response, *ids = await asyncio.gather(
                fetch, *(insert_product(database_url, **fields) for fields, _ in plans)
            )
            walked_past.update(
                i for i, (_, may_show) in zip(ids, plans, strict=True) if not may_show
            )
        else:
            response = await client.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        assert 0 < len(page["data"]) <= limit
        rows.extend(page["data"])
        seen.extend(row["id"] for row in page["data"])
        url = check_page_headers(response)  # follow the Link header, as a client would
        pages += 1
        assert pages < 40, "the walk does not end"

    repeats = [i for i, n in Counter(seen).items() if n > 1]
    assert not repeats, f"{len(repeats)} products repeated"
    missing = existing - set(seen)
    assert not missing, f"{len(missing)} products that existed before the walk were skipped"
    assert not walked_past & set(seen), "a product inserted behind the cursor was shown"
    # The walk is in the database's order (its collation), ties broken by id.
    assert seen == await database_order(database_url, sort, seen)


async def test_limit_is_capped_and_validated(client: httpx.AsyncClient, database_url: str) -> None:
    await seed_products(database_url)
    capped = await client.get("/v1/products", params={"limit": 1000})
    assert capped.status_code == 200
    assert len(capped.json()["data"]) == 100
    assert capped.json()["has_more"] is True
    assert check_page_headers(capped) is not None
    assert len((await client.get("/v1/products")).json()["data"]) == 50  # the default

    for bad in ("0", "-5", "ten"):
        response = await client.get("/v1/products", params={"limit": bad})
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["code"] == "validation_failed"

    last = await client.get("/v1/products", params={"limit": 100, "sort": "sku"})
    while (url := check_page_headers(last)) is not None:
        last = await client.get(url)
    assert last.json()["has_more"] is False
    assert "link" not in last.headers


def _tamper(cursor: str, change: Callable[[list[str]], list[str]]) -> str:
    body, signature = cursor.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(json.dumps(change(payload)).encode()).rstrip(b"=")
    return f"{forged.decode()}.{signature}"


async def test_bad_cursors_are_invalid_cursor_problems(
    client: httpx.AsyncClient, database_url: str
) -> None:
    await seed_products(database_url)
    by_name = (await client.get("/v1/products", params={"sort": "name", "limit": 10})).json()
    cursor = by_name["next_cursor"]
    assert cursor

    def signature_flipped(text: str) -> str:
        # Not the last character: base64 of 16 bytes ends in 4 padding bits, which a
        # decoder ignores, so changing only those would not change the signature.
        body, signature = text.split(".")
        return f"{body}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"

    cases = {
        "payload changed, signature kept": (
            {"sort": "name"},
            _tamper(cursor, lambda p: [p[0], "A", p[2]]),
        ),
        "signature changed": ({"sort": "name"}, signature_flipped(cursor)),
        "not a cursor at all": ({"sort": "name"}, "garbage"),
        "not base64": ({"sort": "name"}, "!!!.???"),
        "cursor of another sort": ({"sort": "-price"}, cursor),
        "cursor of another filter": ({"sort": "name", "q": "name"}, cursor),
        "cursor of another list": ({}, cursor),
    }
    for label, (params, bad) in cases.items():
        response = await client.get("/v1/products", params={**params, "cursor": bad})
        assert response.status_code == 422, (label, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "invalid_cursor", (label, response.text)

    # The untouched cursor still works with the list it came from.
    ok = await client.get("/v1/products", params={"sort": "name", "cursor": cursor})
    assert ok.status_code == 200


async def seed_ledger(database_url: str, product_id: str, location_id: str, count: int) -> None:
    """`count` receipts of one unit, with a level that agrees with them."""
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        conn.transaction(),
    ):
        row = await (
            await conn.execute(
                "INSERT INTO stock_levels (product_id, location_id, on_hand) "
                "VALUES (%s, %s, %s) RETURNING id",
                (product_id, location_id, count),
            )
        ).fetchone()
        assert row is not None
        await conn.execute(
            "INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind, "
            "on_hand_delta, reason) SELECT %s, %s, %s, 'receipt', 1, 'seed ' || g "
            "FROM generate_series(1, %s) AS g",
            (row[0], product_id, location_id, count),
        )


@pytest.mark.parametrize("filtered", [True, False], ids=["by_product", "all"])
async def test_movement_walk_is_stable_while_the_ledger_grows(
    client: httpx.AsyncClient, staff: dict[str, Any], database_url: str, filtered: bool
) -> None:
    headers = staff["headers"]
    product = await create_product(client, headers)
    location = await create_location(client, headers)
    await seed_ledger(database_url, product["id"], location["id"], 250)

    def append() -> Any:
        return client.post(
            "/v1/stock/adjustments",
            json={
                "product_id": product["id"],
                "location_id": location["id"],
                "kind": "receipt",
                "quantity": 1,
                "reason": "appended during the walk",
            },
            headers=headers,
        )

    params = {"product_id": product["id"]} if filtered else {}
    first = await client.get("/v1/stock/movements", params={**params, "limit": 40}, headers=headers)
    assert first.status_code == 200
    existing_max = first.json()["data"][0]["id"]
    ids = [m["id"] for m in first.json()["data"]]
    url = check_page_headers(first)
    appended: list[int] = []
    while url is not None:
        response, *added = await asyncio.gather(
            client.get(url, headers=headers), append(), append()
        )
        assert response.status_code == 200, response.text
        assert all(a.status_code == 201 for a in added)
        appended.extend(a.json()["movement"]["id"] for a in added)
        ids.extend(m["id"] for m in response.json()["data"])
        url = check_page_headers(response)

    assert ids == sorted(ids, reverse=True)  # newest first, strictly: no repeats
    assert len(ids) == len(set(ids)) == 250
    assert ids[0] == existing_max
    assert all(a > existing_max for a in appended)  # appended land before the walk's start
    assert not set(appended) & set(ids)
