"""SQL-injection and XSS payloads in every string field of the API.

Each payload is either stored and returned verbatim as JSON (never interpreted), or
refused with a 4xx problem — never a 5xx. Afterwards every table is still there and the
row counts changed only by the requests that legitimately succeeded. Query parameters
carrying SQL behave exactly like a harmless word that matches nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from sqlalchemy import text

from shelfwise.config import Settings
from shelfwise.context import AppContext
from tests.security_support import PROBLEM, bearer
from tests.support import PASSWORD, create_location, create_product, product_body

SQL = [
    "' OR 1=1 --",
    "'); DROP TABLE products; --",
    "1; DELETE FROM users WHERE '1'='1",
    '" OR ""="',
    "admin'--",
    "' UNION SELECT password_hash, email FROM users --",
    "%' AND pg_sleep(5) IS NULL --",
    "$1 $$ ; COMMIT; $$",
    "%(email)s :name ?",
    "\\'; TRUNCATE stock_movements; --",
]
XSS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(document.cookie)",
    "<svg/onload=alert(1)>",
    "{{7*7}} ${7*7} <%= 7*7 %>",
]
UNICODE = [
    "Ünïcødé 漢字 🙂",
    "\u202eevil\u202c right-to-left override",
    "e\u0301 combining, \u200b zero width",
    "outside the BMP: \U0001d518\U0001d52b\U0001d526 \U00010348 \U0001f600",
]
STORABLE = SQL + XSS + UNICODE
# Refused by every field: a NUL (PostgreSQL text cannot hold it), a lone surrogate (not
# encodable as UTF-8) and strings far over any field's limit.
UNSTORABLE = ["abc\x00def", "lone \ud800 surrogate", "A" * 10_000, "漢" * 6_000]
ALL = STORABLE + UNSTORABLE
TABLES = (
    "users",
    "api_keys",
    "products",
    "locations",
    "stock_levels",
    "stock_movements",
    "orders",
    "refresh_families",
    "user_sessions",
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Many failed logins for one account are part of the test, not an attack on it.
    return settings.model_copy(update={"login_failures_per_account": "100000/minute"})


def raw_json(body: dict[str, Any]) -> bytes:
    """JSON with escapes (ensure_ascii), so even a lone surrogate can be sent."""
    return json.dumps(body).encode()


async def send(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.request(
        method,
        path,
        content=raw_json(body),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def assert_safe_refusal(response: httpx.Response, context: object) -> None:
    assert 400 <= response.status_code < 500, (context, response.status_code, response.text)
    assert response.headers["content-type"] == PROBLEM, context


def assert_verbatim(response: httpx.Response, field: str, payload: str, context: object) -> None:
    assert response.headers["content-type"] == "application/json", context
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.json()[field] == payload, context


async def counts(ctx: AppContext) -> dict[str, int]:
    async with ctx.db.engine.connect() as conn:
        return {
            table: int(await conn.scalar(text(f'SELECT count(*) FROM "{table}"')) or 0)
            for table in TABLES
        }


@pytest.fixture
async def tables_survive(ctx: AppContext) -> AsyncIterator[dict[str, int]]:
    """Yields a dict to record expected row-count changes; checks them at the end."""
    before = await counts(ctx)
    expected_delta: dict[str, int] = dict.fromkeys(TABLES, 0)
    yield expected_delta
    after = await counts(ctx)  # a dropped table would raise here
    assert {t: after[t] - before[t] for t in TABLES} == expected_delta


async def test_product_fields(
    client: httpx.AsyncClient, staff: dict[str, Any], tables_survive: dict[str, int]
) -> None:
    # Free text: stored verbatim. Patterned identifiers: refused.
    for field in ("name", "description", "sku", "category"):
        for payload in ALL:
            body = product_body(**{field: payload})
            response = await send(client, "POST", "/v1/products", body, staff["headers"])
            context = (field, payload[:40])
            storable = field in ("name", "description") and payload in STORABLE
            if not storable:
                assert_safe_refusal(response, context)
                continue
            assert response.status_code == 201, (context, response.text)
            tables_survive["products"] += 1
            assert_verbatim(response, field, payload, context)
            again = await client.get(f"/v1/products/{response.json()['id']}")
            assert_verbatim(again, field, payload, context)

    # The same fields through PATCH.
    product = await create_product(client, staff["headers"])
    tables_survive["products"] += 1
    etag = f'"v{product["version"]}"'
    for field in ("name", "description", "sku", "category"):
        for payload in ALL:
            response = await send(
                client,
                "PATCH",
                f"/v1/products/{product['id']}",
                {field: payload},
                {**staff["headers"], "If-Match": etag},
            )
            context = ("patch", field, payload[:40])
            if field in ("name", "description") and payload in STORABLE:
                assert response.status_code == 200, (context, response.text)
                assert_verbatim(response, field, payload, context)
                etag = response.headers["etag"]
            else:
                assert_safe_refusal(response, context)


async def test_inventory_fields(
    client: httpx.AsyncClient, staff: dict[str, Any], tables_survive: dict[str, int]
) -> None:
    for field in ("code", "name"):
        for payload in ALL:
            body = {"code": f"L-{uuid.uuid4().hex[:8]}", "name": "Shelf", field: payload}
            response = await send(client, "POST", "/v1/locations", body, staff["headers"])
            context = (field, payload[:40])
            if field == "name" and payload in STORABLE:
                assert response.status_code == 201, (context, response.text)
                tables_survive["locations"] += 1
                assert_verbatim(response, field, payload, context)
                again = await client.get(
                    f"/v1/locations/{response.json()['id']}", headers=staff["headers"]
                )
                assert_verbatim(again, field, payload, context)
            else:
                assert_safe_refusal(response, context)

    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    tables_survive["products"] += 1
    tables_survive["locations"] += 1
    stored: dict[str, list[str]] = {"reason": [], "reference": []}
    for field in ("reason", "reference"):
        for payload in ALL:
            body = {
                "product_id": product["id"],
                "location_id": location["id"],
                "kind": "receipt",
                "quantity": 1,
                "reason": "restock",
                field: payload,
            }
            response = await send(client, "POST", "/v1/stock/adjustments", body, staff["headers"])
            context = (field, payload[:40])
            # `reference` is capped at 200 characters, `reason` at 500.
            if payload in STORABLE:
                assert response.status_code == 201, (context, response.text)
                tables_survive["stock_movements"] += 1
                assert response.json()["movement"][field] == payload, context
                stored[field].append(payload)
            else:
                assert_safe_refusal(response, context)
    tables_survive["stock_levels"] += 1  # one level, created by the first receipt

    movements = await client.get(
        "/v1/stock/movements",
        params={"product_id": product["id"], "limit": 100},
        headers=staff["headers"],
    )
    assert movements.status_code == 200
    data = movements.json()["data"]
    assert sorted(m["reason"] for m in data if m["reason"] != "restock") == sorted(stored["reason"])
    assert sorted(m["reference"] for m in data if m["reference"]) == sorted(stored["reference"])
    level = await client.get(
        "/v1/stock", params={"product_id": product["id"]}, headers=staff["headers"]
    )
    assert level.json()["data"][0]["on_hand"] == len(data)


async def test_identity_fields(
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    customer: dict[str, Any],
    tables_survive: dict[str, int],
) -> None:
    # Registration: the display name is free text; the email must be an email.
    for payload in ALL:
        email = f"inj-{uuid.uuid4().hex[:8]}@example.com"
        body = {"email": email, "password": PASSWORD, "full_name": payload}
        response = await send(client, "POST", "/v1/auth/register", body)
        context = ("full_name", payload[:40])
        if payload in STORABLE:
            assert response.status_code == 201, (context, response.text)
            tables_survive["users"] += 1
            assert_verbatim(response, "full_name", payload, context)
        else:
            assert_safe_refusal(response, context)
    for payload in ALL:
        body = {"email": payload, "password": PASSWORD}
        assert_safe_refusal(await send(client, "POST", "/v1/auth/register", body), payload)
    # SQL that is also a valid email address is just an email address.
    odd = "o'neil'--or'1'='1@example.com"
    created = await send(client, "POST", "/v1/auth/register", {"email": odd, "password": PASSWORD})
    assert created.status_code == 201, created.text
    tables_survive["users"] += 1
    assert created.json()["email"] == odd
    logged_in = await send(client, "POST", "/v1/auth/login", {"email": odd, "password": PASSWORD})
    assert logged_in.status_code == 200

    # Login and session sign-in: payloads never authenticate anyone.
    for path in ("/v1/auth/login", "/v1/auth/session"):
        for payload in ALL:
            for body in (
                {"email": payload, "password": PASSWORD},
                {"email": customer["email"], "password": payload},
                {"email": payload, "password": payload},
            ):
                response = await send(client, "POST", path, body)
                context = (path, body["email"][:30], body["password"][:30])
                assert response.status_code in (401, 422), (context, response.text)
                assert response.headers["content-type"] == PROBLEM
                assert "access_token" not in response.text
                assert "set-cookie" not in response.headers
    tables_survive["refresh_families"] += 1  # the one real login above

    # API key names: free text, stored verbatim.
    for payload in ALL:
        body = {"name": payload, "scopes": ["catalog:read"]}
        response = await send(client, "POST", "/v1/api-keys", body, admin["headers"])
        context = ("api key name", payload[:40])
        if payload in STORABLE and len(payload) <= 100:
            assert response.status_code == 201, (context, response.text)
            tables_survive["api_keys"] += 1
            assert_verbatim(response, "name", payload, context)
        else:
            assert_safe_refusal(response, context)
    listed = await client.get("/v1/api-keys", headers=admin["headers"])
    assert sorted(k["name"] for k in listed.json()) == sorted(STORABLE)

    # Bearer "tokens" made of payloads are just invalid credentials.
    for payload in SQL + XSS:
        response = await client.get("/v1/auth/me", headers=bearer(payload.encode().hex()))
        assert response.status_code == 401
        response = await client.get(
            "/v1/auth/me", headers=bearer("sw_" + payload.replace(" ", "_"))
        )
        assert response.status_code == 401


async def test_query_parameters_are_data_not_sql(
    client: httpx.AsyncClient, staff: dict[str, Any], tables_survive: dict[str, int]
) -> None:
    # Fixed SKUs: a random hex SKU such as T-7f3a... would legitimately match the "7"
    # in a payload like {{7*7}} (numbers after a hyphen are searchable), making this flaky.
    for sku, name in (("INJ-A", "Blue mug"), ("INJ-B", "Red kettle"), ("INJ-C", "Green teapot")):
        await create_product(client, staff["headers"], sku=sku, name=name, category="kitchen")
    tables_survive["products"] += 3

    def url(params: dict[str, str]) -> str:
        # Encoded by hand: a lone surrogate goes out as its raw (invalid UTF-8) bytes.
        return "/v1/products?" + urlencode(params, encoding="utf-8", errors="surrogatepass")

    async def ids(params: dict[str, str]) -> list[str]:
        response = await client.get(url(params))
        assert response.status_code == 200, (params, response.text)
        return [p["id"] for p in response.json()["data"]]

    everything = await ids({})
    assert len(everything) == 3
    assert len(await ids({"q": "mug"})) == 1
    benign = await ids({"q": "zzqxnonexistent"})
    assert benign == []
    for payload in STORABLE:
        # SQL in the search box behaves like any other words that match nothing.
        assert await ids({"q": payload}) == benign, payload
        assert await ids({"q": f"mug {payload}"}) == benign, payload
    for payload in UNSTORABLE:
        response = await client.get(url({"q": payload}))
        if response.status_code == 200:  # undecodable bytes arrive as U+FFFD: just a word
            assert [p["id"] for p in response.json()["data"]] == benign
        else:
            assert_safe_refusal(response, ("q", payload[:40]))

    for name, values in {
        "category": ALL,
        "sort": ALL,
        "cursor": ALL,
        "limit": SQL[:4],
    }.items():
        for payload in values:
            assert_safe_refusal(await client.get(url({name: payload})), (name, payload[:40]))

    # Enum and id filters elsewhere.
    for path, name in (
        ("/v1/users", "role"),
        ("/v1/orders", "status"),
        ("/v1/stock/movements", "kind"),
        ("/v1/stock/movements", "product_id"),
        ("/v1/stock", "location_id"),
    ):
        for payload in SQL + XSS:
            response = await client.get(path, params={name: payload}, headers=staff["headers"])
            assert_safe_refusal(response, (path, name, payload))
    assert await ids({}) == everything


async def test_path_parameters_and_headers(
    client: httpx.AsyncClient, staff: dict[str, Any], tables_survive: dict[str, int]
) -> None:
    product = await create_product(client, staff["headers"])
    tables_survive["products"] += 1
    for payload in SQL + XSS + UNICODE:
        segment = quote(payload, safe="")
        for response in (
            await client.get(f"/v1/products/{segment}"),
            await client.get(f"/v1/orders/{segment}", headers=staff["headers"]),
            await client.delete(f"/v1/products/{segment}", headers=staff["headers"]),
            await client.delete(f"/v1/auth/sessions/{segment}", headers=staff["headers"]),
        ):
            assert_safe_refusal(response, payload)

    # ETag and idempotency headers carrying payloads: refused, never parsed as SQL.
    for payload in SQL + XSS:
        patch = await client.patch(
            f"/v1/products/{product['id']}",
            json={"name": "Renamed"},
            headers={**staff["headers"], "If-Match": payload},
        )
        assert patch.status_code == 412, (payload, patch.text)
        adjusted = await client.post(
            "/v1/stock/adjustments",
            json={
                "product_id": product["id"],
                "location_id": str(uuid.uuid4()),
                "kind": "receipt",
                "quantity": 1,
                "reason": "x",
            },
            headers={**staff["headers"], "Idempotency-Key": payload},
        )
        assert_safe_refusal(adjusted, payload)
    assert (await client.get(f"/v1/products/{product['id']}")).json()["name"] == product["name"]
