"""HTTP edge cases done by the book, through the real app (issue 12).

Bad input never gets a 5xx (webhook hosts the resolver cannot encode, import bodies that
cannot be CSV, a body that never finishes); malformed JSON is 400 and another media type
415; 405 carries the resource's real `Allow`; CORS preflights are answered for listed
origins and refused as problem+json for others; `Idempotency-Key` is an RFC 8941 string.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shelfwise.clock import FixedClock
from tests.security_support import PROBLEM, build_settings, client_for, running_app
from tests.support import create_location, create_product, receive_stock

# -- bad input never gets a 5xx -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://a..b/hook",
        f"http://{'x' * 64}.example.com/hook",  # a DNS label is at most 63 octets
        "http://ex\udcffample.com/hook",  # a byte no encoding can carry
        "http://a\u0000b.example/hook",
        "http://[::1/hook",  # unclosed IPv6 literal
    ],
)
async def test_webhook_url_that_cannot_resolve_is_422_on_create_and_patch(
    client: httpx.AsyncClient, admin: dict[str, Any], url: str
) -> None:
    created = await client.post(
        "/v1/webhooks",
        content=_json({"url": url, "event_types": ["*"]}),
        headers={**admin["headers"], "Content-Type": "application/json"},
    )
    assert created.status_code == 422, created.text
    assert created.headers["content-type"] == PROBLEM

    # A webhook that exists, then the same URL by PATCH.
    good = await client.post(
        "/v1/webhooks",
        json={"url": "https://93.184.215.14/hook", "event_types": ["*"]},
        headers=admin["headers"],
    )
    assert good.status_code == 201, good.text
    patched = await client.patch(
        f"/v1/webhooks/{good.json()['id']}",
        content=_json({"url": url}),
        headers={**admin["headers"], "Content-Type": "application/json"},
    )
    assert patched.status_code == 422, patched.text


def _json(value: Any) -> bytes:
    import json

    # ensure_ascii keeps lone surrogates as \udcff escapes: valid JSON, invalid text.
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({}, b"", 415, "unsupported_media_type"),  # no body, no type
        ({"Content-Type": "application/json"}, b'{"sku": "A"}', 415, "unsupported_media_type"),
        ({"Content-Type": "text/csv"}, b"", 400, "empty_import"),
    ],
)
async def test_import_that_cannot_be_a_csv_is_refused_at_once(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    response = await client.post(
        "/v1/imports", content=body, headers={**staff["headers"], **headers}
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert "var/" not in response.text


async def test_import_job_shows_no_server_path(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/imports",
        content=b"sku,name,price_minor,currency\nP-1,Pen,100,EUR\n",
        headers={**staff["headers"], "Content-Type": "text/csv"},
    )
    assert response.status_code == 202, response.text
    args = response.json()["args"]
    assert "path" not in args
    assert "/" not in str(args["file"])
    assert args["file"].endswith(".csv")


@pytest.fixture
async def quick_deadline(database_url: str, clock: FixedClock) -> AsyncIterator[Any]:
    async with running_app(build_settings(database_url, request_timeout_seconds=0.3), clock) as a:
        yield a


async def test_body_that_never_finishes_is_408_not_503(quick_deadline: Any) -> None:
    never = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        yield b'{"email": "a@example.com", '
        await never.wait()  # the client stops sending; only the deadline ends this

    async with client_for(quick_deadline) as client:
        response = await asyncio.wait_for(
            client.post(
                "/v1/auth/login",
                content=stalled_body(),
                headers={"Content-Type": "application/json"},
            ),
            timeout=10,
        )
    assert response.status_code == 408, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "request_body_timeout"
    assert response.headers["connection"] == "close"


# -- media types and JSON ------------------------------------------------------------------


async def test_malformed_json_is_400(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    response = await client.post(
        "/v1/products",
        content=b'{"sku": "A-1", "name": ',
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "malformed_json"


@pytest.mark.parametrize(
    ("method", "accept_header"), [("POST", "accept-post"), ("PATCH", "accept-patch")]
)
async def test_non_json_media_type_on_a_json_endpoint_is_415(
    client: httpx.AsyncClient, staff: dict[str, Any], method: str, accept_header: str
) -> None:
    url = "/v1/products"
    if method == "PATCH":
        url = f"/v1/products/{(await create_product(client, staff['headers']))['id']}"
    response = await client.request(
        method,
        url,
        content=b"sku=A-1&name=Mug",
        headers={
            **staff["headers"],
            "Content-Type": "application/x-www-form-urlencoded",
            "If-Match": '"v1"',
        },
    )
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "unsupported_media_type"
    assert response.headers[accept_header] == "application/json"


async def test_wrong_fields_in_good_json_stay_422(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    response = await client.post("/v1/products", json={"sku": 5}, headers=staff["headers"])
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


# -- 405 and OPTIONS -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/products/{id}", "GET, PATCH, DELETE"),
        ("OPTIONS", "/v1/products/{id}", "GET, PATCH, DELETE"),
        ("DELETE", "/v1/webhooks", "GET, POST"),
        ("OPTIONS", "/v1/users/contacts", "GET"),  # not /v1/users/{user_id}'s PATCH
        ("POST", "/v1/products/{id}/image", "GET, PUT"),
    ],
)
async def test_405_lists_every_method_of_the_resource(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path.replace("{id}", str(uuid.uuid4())))
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.headers["content-type"] == PROBLEM


@pytest.fixture
async def cors_app(database_url: str, clock: FixedClock) -> AsyncIterator[Any]:
    settings = build_settings(database_url, cors_origins=["https://shop.example"])
    async with running_app(settings, clock) as a:
        yield a


def preflight(origin: str, method: str = "PATCH") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, if-match",
    }


async def test_preflight_from_a_listed_origin_is_answered(cors_app: Any) -> None:
    async with client_for(cors_app) as client:
        response = await client.options(
            f"/v1/products/{uuid.uuid4()}", headers=preflight("https://shop.example")
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://shop.example"
    assert "PATCH" in response.headers["access-control-allow-methods"]


@pytest.mark.parametrize(
    ("origin", "method"), [("https://evil.example", "PATCH"), ("https://shop.example", "TRACE")]
)
async def test_preflight_refused_cleanly_as_a_problem(
    cors_app: Any, origin: str, method: str
) -> None:
    async with client_for(cors_app) as client:
        response = await client.options("/v1/products", headers=preflight(origin, method))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "cors_refused"
    if origin != "https://shop.example":
        assert "access-control-allow-origin" not in response.headers


# -- Idempotency-Key as an RFC 8941 string --------------------------------------------------


async def _stocked(client: httpx.AsyncClient, staff: dict[str, Any]) -> dict[str, Any]:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    await receive_stock(client, staff["headers"], product["id"], location["id"], 10)
    return {"lines": [{"product_id": product["id"], "quantity": 1}]}


async def test_quoted_and_bare_idempotency_keys_are_the_same_key(
    client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    body = await _stocked(client, staff)
    key = f"order-{uuid.uuid4().hex}"
    first = await client.post(
        "/v1/orders", json=body, headers={**customer["headers"], "Idempotency-Key": f'"{key}"'}
    )
    assert first.status_code == 201, first.text
    again = await client.post(
        "/v1/orders", json=body, headers={**customer["headers"], "Idempotency-Key": key}
    )
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize("key", ['""', '"unterminated', '"bad\\escape"'])
async def test_empty_or_malformed_structured_key_is_refused(
    client: httpx.AsyncClient, customer: dict[str, Any], key: str
) -> None:
    response = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": str(uuid.uuid4()), "quantity": 1}]},
        headers={**customer["headers"], "Idempotency-Key": key},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


async def test_missing_key_is_400_and_the_document_says_required(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": str(uuid.uuid4()), "quantity": 1}]},
        headers=customer["headers"],
    )
    assert response.status_code == 400
    assert response.json()["code"] == "idempotency_key_missing"
    spec = (await client.get("/openapi.json")).json()
    (header,) = [
        p
        for p in spec["paths"]["/v1/orders"]["post"]["parameters"]
        if p["name"] == "Idempotency-Key"
    ]
    assert header["required"] is True
    assert header["schema"]["type"] == "string"
    assert header["schema"]["pattern"]
