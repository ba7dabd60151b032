"""The HTTP edge: problem+json for every failure, request ids, limits, timing, gzip, logs."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shelfwise.context import AppContext
from tests.support import create_product

PROBLEM = "application/problem+json"
PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code", "request_id"}
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
SECRET_TEXT = "db-password=hunter2 at /srv/shelfwise/secret_module.py"


def assert_problem(
    response: httpx.Response, status: int, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_FIELDS, body
    assert body["status"] == status
    assert body["type"] == f"urn:shelfwise:problem:{body['code']}"
    assert body["instance"] == response.request.url.path
    assert body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code
    return body


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# -- routing errors ----------------------------------------------------------------------


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/nothing-here")
    body = assert_problem(response, 404, "not_found")
    assert body["title"] == "Not Found"
    assert body["instance"] == "/v1/nothing-here"
    assert isinstance(body["detail"], str)
    assert body["detail"]


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/products")
    assert_problem(response, 405, "method_not_allowed")
    # Starlette lists the methods of the first route matching the path only (GET here,
    # though POST exists too), so only check that what it lists is right.
    assert "GET" in response.headers["allow"].replace(" ", "").split(",")


# -- validation --------------------------------------------------------------------------


async def test_validation_lists_each_bad_field(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    response = await client.post(
        "/v1/products",
        json={"sku": "has space", "price_minor": "lots", "currency": "eu"},
        headers=staff["headers"],
    )
    body = assert_problem(response, 422, "validation_failed")
    fields = {error["field"] for error in body["errors"]}
    assert fields == {"body.sku", "body.name", "body.price_minor", "body.currency"}
    for error in body["errors"]:
        assert set(error) == {"field", "message", "type"}  # never the rejected input
    assert "lots" not in response.text


async def test_validation_of_query_parameters(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/products", params={"limit": "0", "sort": "colour"})
    body = assert_problem(response, 422, "validation_failed")
    assert {error["field"] for error in body["errors"]} == {"query.limit", "query.sort"}


async def test_password_is_not_echoed_in_validation_errors(client: httpx.AsyncClient) -> None:
    secret = "s3cret-" + "x" * 200  # over the maximum length
    response = await client.post(
        "/v1/auth/login", json={"email": "someone@example.com", "password": secret}
    )
    body = assert_problem(response, 422)
    assert [error["field"] for error in body["errors"]] == ["body.password"]
    assert "s3cret" not in response.text


@pytest.mark.parametrize(
    "content", [b'{"sku": "A1", "name": ', b"not json at all", b"{'single': 'quotes'}"]
)
async def test_malformed_json_is_a_400_problem(
    client: httpx.AsyncClient, staff: dict[str, Any], content: bytes
) -> None:
    response = await client.post(
        "/v1/products",
        content=content,
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")


@pytest.mark.parametrize("content", [b"[1, 2, 3]", b'"x"'])
async def test_json_of_the_wrong_shape_is_a_422_problem(
    client: httpx.AsyncClient, staff: dict[str, Any], content: bytes
) -> None:
    response = await client.post(
        "/v1/products",
        content=content,
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    body = assert_problem(response, 422, "validation_failed")
    assert body["errors"]


async def test_body_that_is_not_utf8_is_a_400_problem(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    # FastAPI reports undecodable bytes as a body parsing error (400), not a 500.
    response = await client.post(
        "/v1/products",
        content=b'{"name": "\xc3\x28"}',
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "bad_request")


def _nul_cases() -> list[Any]:
    product = {"sku": "NUL-1", "name": "Mug", "price_minor": 100, "currency": "EUR"}
    adjustment = {
        "product_id": "00000000-0000-4000-8000-000000000001",
        "location_id": "00000000-0000-4000-8000-000000000002",
        "kind": "receipt",
        "quantity": 1,
        "reason": "count",
    }
    password = "correct-horse-battery-staple"
    return [
        pytest.param(
            "staff", "/v1/products", {**product, "name": "M\x00ug"}, "body.name", id="product-name"
        ),
        pytest.param(
            "staff",
            "/v1/products",
            {**product, "description": "\x00"},
            "body.description",
            id="product-description",
        ),
        pytest.param(
            "staff",
            "/v1/locations",
            {"code": "NUL-1", "name": "Hall\x00"},
            "body.name",
            id="location-name",
        ),
        pytest.param(
            "staff",
            "/v1/stock/adjustments",
            {**adjustment, "reason": "lost\x00"},
            "body.reason",
            id="adjustment-reason",
        ),
        pytest.param(
            "staff",
            "/v1/stock/adjustments",
            {**adjustment, "reference": "PO\x00"},
            "body.reference",
            id="adjustment-reference",
        ),
        pytest.param(
            None,
            "/v1/auth/register",
            {"email": "nul@example.com", "password": password, "full_name": "Ann\x00"},
            "body.full_name",
            id="register-full-name",
        ),
        pytest.param(
            None,
            "/v1/auth/login",
            {"email": "nul\x00@example.com", "password": password},
            "body.email",
            id="login-email",
        ),
        pytest.param(
            "admin",
            "/v1/api-keys",
            {"name": "ci\x00", "scopes": ["catalog:read"]},
            "body.name",
            id="api-key-name",
        ),
    ]


@pytest.mark.parametrize(("who", "path", "payload", "field"), _nul_cases())
async def test_nul_byte_in_a_string_is_a_422_not_a_500(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    admin: dict[str, Any],
    who: str | None,
    path: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    headers = {"staff": staff, "admin": admin}[who]["headers"] if who else {}
    response = await client.post(path, json=payload, headers=headers)
    body = assert_problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == [field]


async def test_nul_byte_in_a_query_string_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/products", params={"q": "mug\x00"})
    body = assert_problem(response, 422, "validation_failed")
    assert [error["field"] for error in body["errors"]] == ["query.q"]


# -- body size ---------------------------------------------------------------------------


async def test_declared_oversized_body_is_a_413_problem(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    limit = ctx.settings.max_body_bytes
    before = sample("shelfwise_http_body_too_large_total", {})
    response = await client.post(
        "/v1/products",
        content=b" " * (limit + 1),
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    body = assert_problem(response, 413, "payload_too_large")
    assert str(limit) in body["detail"]
    assert sample("shelfwise_http_body_too_large_total", {}) == before + 1


async def test_body_at_the_limit_is_read(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    limit = ctx.settings.max_body_bytes
    response = await client.post(
        "/v1/products",
        content=b" " * limit,  # whitespace only: invalid JSON, but within the limit
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    assert_problem(response, 400, "malformed_json")  # read and parsed, not refused as 413


async def test_streamed_oversized_body_is_refused_while_streaming(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    limit = ctx.settings.max_body_bytes
    chunk = 64 * 1024
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(4 * limit // chunk):  # four times the limit, if it were all read
            sent += chunk
            yield b" " * chunk

    response = await client.post(
        "/v1/products",
        content=body(),
        headers={**staff["headers"], "Content-Type": "application/json"},
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")
    # Refused as soon as the limit was crossed, not after buffering everything.
    assert sent <= limit + chunk


# -- unexpected exceptions ---------------------------------------------------------------


@pytest.fixture
def boom_app(app: FastAPI) -> FastAPI:
    async def boom() -> None:
        raise RuntimeError(SECRET_TEXT)

    app.add_api_route("/boom", boom, methods=["GET"])
    return app


async def test_unexpected_exception_is_an_opaque_500(
    boom_app: FastAPI, client: httpx.AsyncClient
) -> None:
    labels = {"exception": "RuntimeError"}
    before = sample("shelfwise_unhandled_errors_total", labels)
    requests_before = sample(
        "shelfwise_http_requests_total", {"method": "GET", "route": "/boom", "status": "500"}
    )
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        response = await client.get("/boom", headers={"X-Request-ID": "boom-request-0001"})

    body = assert_problem(response, 500, "internal_error")
    assert body["request_id"] == "boom-request-0001" == response.headers["x-request-id"]
    assert set(body) == PROBLEM_FIELDS  # nothing else
    for leak in ("hunter2", "secret_module", "RuntimeError", "Traceback", "File "):
        assert leak not in response.text

    assert sample("shelfwise_unhandled_errors_total", labels) == before + 1
    assert (
        sample(
            "shelfwise_http_requests_total", {"method": "GET", "route": "/boom", "status": "500"}
        )
        == requests_before + 1
    )
    errors = [entry for entry in logs if entry["event"] == "unhandled_exception"]
    assert len(errors) == 1
    assert errors[0]["log_level"] == "error"
    assert errors[0]["request_id"] == "boom-request-0001"
    assert isinstance(errors[0]["exc_info"], RuntimeError)  # the details go to the log only
    access = [entry for entry in logs if entry["event"] == "request"]
    assert [(a["status"], a["route"]) for a in access] == [(500, "/boom")]


@pytest.fixture
def log_output(app: FastAPI) -> Iterator[io.StringIO]:
    """What the app's configured structlog pipeline prints, rendered, into a buffer.

    Only the output file changes; the processors and renderer are create_app's own.
    (create_app binds the sys.stderr of the moment, so capsys is unreliable here.)
    """
    buffer = io.StringIO()
    previous = structlog.get_config()["logger_factory"]
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    yield buffer
    structlog.configure(logger_factory=previous)


async def test_unexpected_exception_traceback_reaches_the_log_output(
    boom_app: FastAPI, client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    response = await client.get("/boom", headers={"X-Request-ID": "boom-request-0002"})
    assert response.status_code == 500
    err = log_output.getvalue()
    assert "unhandled_exception" in err
    assert "hunter2" in err  # the operator sees the detail; the client does not
    assert "boom-request-0002" in err


# -- request id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "incoming",
    ["abcd1234", "req-2026.01.15:0001_x", "A" * 128, "6f1c6b8e-3a43-4c55-9a8e-0c1f6ad5c0b1"],
)
async def test_well_formed_request_id_is_echoed(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": incoming})
    assert response.headers["x-request-id"] == incoming
    problem = await client.get("/v1/nope", headers={"X-Request-ID": incoming})
    assert problem.json()["request_id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["short", "has spaces in it", "A" * 129, "semi;colon-0001", "slash/1234567", "ünïcode-12345"],
)
async def test_malformed_request_id_is_replaced(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/v1/nope", headers=[("X-Request-ID", incoming.encode("utf-8"))])
    generated = response.headers["x-request-id"]
    assert generated != incoming
    assert GENERATED_ID.fullmatch(generated)
    assert response.json()["request_id"] == generated


async def test_missing_request_id_is_generated_per_request(client: httpx.AsyncClient) -> None:
    first = (await client.get("/healthz")).headers["x-request-id"]
    second = (await client.get("/healthz")).headers["x-request-id"]
    assert GENERATED_ID.fullmatch(first)
    assert GENERATED_ID.fullmatch(second)
    assert first != second


async def test_every_log_line_of_a_request_carries_its_id(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        registered = await client.post(
            "/v1/auth/register",
            json={"email": "logged@example.com", "password": "correct-horse-battery-staple"},
            headers={"X-Request-ID": "log-check-0001"},
        )
        failed = await client.post(
            "/v1/auth/login",
            json={"email": "logged@example.com", "password": "wrong-password-123"},
            headers={"X-Request-ID": "log-check-0002"},
        )
    assert registered.status_code == 201
    assert failed.status_code == 401
    events = [(entry["event"], entry.get("request_id")) for entry in logs]
    assert ("user_created", "log-check-0001") in events
    assert ("login_failed", "log-check-0002") in events
    assert events.count(("request", "log-check-0001")) == 1
    assert events.count(("request", "log-check-0002")) == 1
    assert all(request_id in ("log-check-0001", "log-check-0002") for _, request_id in events)
    # Bound per request only: nothing leaks into logging outside a request.
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as outside:
        structlog.get_logger("test").info("after")
    assert "request_id" not in outside[0]


async def test_rendered_log_lines_carry_the_request_id(
    client: httpx.AsyncClient, log_output: io.StringIO
) -> None:
    await client.post(
        "/v1/auth/login",
        json={"email": "nobody@example.com", "password": "wrong-password-123"},
        headers={"X-Request-ID": "rendered-0001"},
    )
    lines = [line for line in log_output.getvalue().splitlines() if line.strip()]
    assert any("login_failed" in line for line in lines)
    assert any(" request " in line for line in lines)
    for line in lines:
        assert "request_id=rendered-0001" in line, line


# -- response headers --------------------------------------------------------------------


async def test_server_timing_header(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/healthz"), await client.get("/v1/nope")):
        assert re.fullmatch(r"app;dur=\d+\.\d", response.headers["server-timing"])


async def test_large_responses_are_gzipped(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    for i in range(8):
        await create_product(client, staff["headers"], name=f"Compressible mug {i}")
    response = await client.get("/v1/products", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    assert len(response.content) > ctx.settings.gzip_min_bytes  # decoded by httpx
    assert len(response.json()["data"]) == 8

    identity = await client.get("/v1/products", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers
    assert identity.json() == response.json()


async def test_small_responses_are_not_gzipped(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/v1/products"):
        response = await client.get(path, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200
        assert len(response.content) < 1024
        assert "content-encoding" not in response.headers


async def test_problem_content_type_on_domain_errors(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    response = await client.get(f"/v1/products/{uuid.uuid4()}")
    assert_problem(response, 404, "product_not_found")
    response = await client.get("/v1/products/not-a-uuid")
    assert_problem(response, 422, "validation_failed")


async def test_401_has_www_authenticate(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/auth/me")
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"
    response = await client.get("/v1/auth/me", headers={"Authorization": "Bearer not-a-token"})
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_403_is_a_problem_without_www_authenticate(
    client: httpx.AsyncClient, customer: dict[str, Any]
) -> None:
    response = await client.post("/v1/products", json={"sku": "X"}, headers=customer["headers"])
    # Authorization is decided before the (invalid) body is reported on.
    assert_problem(response, 403, "forbidden")
    assert "www-authenticate" not in response.headers
