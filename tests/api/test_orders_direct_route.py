"""`POST /v1/orders` answers the same through its direct route as through FastAPI's solver.

The route skips FastAPI's dependency solving for well-formed requests
(`http/direct_route.py`); everything else is handed to FastAPI's handler. Each request
below is sent twice, once each way (any dependency override forces FastAPI's path), and
the answers must match: status, problem document, and the headers a client reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from shelfwise.http.direct_route import direct_route
from shelfwise.identity.dependencies import SESSION_COOKIE
from tests.api.test_orders import stocked_product
from tests.security_support import SAME_ORIGIN, set_cookies, sign_in, use_cookie

Send = Callable[[], Awaitable[httpx.Response]]
PER_SEND = frozenset({"id", "instance", "request_id", "created_at", "updated_at", "expires_at"})
COMPARED_HEADERS = ("content-type", "idempotent-replayed", "cache-control", "www-authenticate")


def _unused() -> None:  # overriding it changes nothing but the path taken
    raise AssertionError


def _answer(response: httpx.Response) -> dict[str, Any]:
    body: Any = response.json() if response.content else None
    if isinstance(body, dict):
        # Per-order and per-request values differ between the two sends.
        body = {k: v for k, v in body.items() if k not in PER_SEND}
    headers = {h: response.headers.get(h) for h in COMPARED_HEADERS}
    return {"status": response.status_code, "body": body, "headers": headers}


async def both_ways(app: FastAPI, send: Send) -> tuple[dict[str, Any], dict[str, Any]]:
    direct = _answer(await send())
    app.dependency_overrides[_unused] = _unused
    try:
        solved = _answer(await send())
    finally:
        app.dependency_overrides.clear()
    return direct, solved


@pytest.fixture
def solves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times FastAPI's request handler solved dependencies."""
    calls: list[int] = []
    original = fastapi.routing.solve_dependencies

    async def counting(**kwargs: Any) -> Any:
        calls.append(1)
        return await original(**kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


async def test_a_well_formed_order_skips_the_solver_and_answers_alike(
    app: FastAPI,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    solves: list[int],
) -> None:
    product, _ = await stocked_product(client, staff, 10)
    body = {"lines": [{"product_id": product["id"], "quantity": 1}]}
    solves.clear()

    def send(key: str | None = None, json: Any = body) -> Send:
        def post() -> Awaitable[httpx.Response]:  # a fresh key per send unless given
            headers = {**customer["headers"], "Idempotency-Key": key or uuid.uuid4().hex}
            return client.post("/v1/orders", json=json, headers=headers)

        return post

    placed = await client.post(
        "/v1/orders", json=body, headers={**customer["headers"], "Idempotency-Key": "k-1"}
    )
    assert placed.status_code == 201, placed.text
    assert placed.headers["Location"].endswith(f"/v1/orders/{placed.json()['id']}")
    assert solves == []  # the direct path

    direct, solved = await both_ways(app, send())
    assert direct == solved
    assert direct["status"] == 201
    # The replay of the first order, and the same key with another body.
    direct, solved = await both_ways(app, send("k-1"))
    assert direct == solved
    assert direct["headers"]["idempotent-replayed"] == "true"
    other = {"lines": [{"product_id": product["id"], "quantity": 2}]}
    direct, solved = await both_ways(app, send("k-1", other))
    assert direct == solved
    assert direct["body"]["code"] == "idempotency_key_reused"
    # More than there is: the use case's refusal, not a validation error.
    greedy = {"lines": [{"product_id": product["id"], "quantity": 50}]}
    direct, solved = await both_ways(app, send(json=greedy))
    assert direct == solved
    assert direct["status"] == 409


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        ({}, None),  # no Idempotency-Key: 400
        ({"Idempotency-Key": ""}, None),  # malformed key: 422
        ({"Idempotency-Key": "a b"}, None),
        ({"Idempotency-Key": '"unterminated'}, None),
        ({"Idempotency-Key": "k", "Content-Type": "text/plain"}, b'{"lines": []}'),
        ({"Idempotency-Key": "k", "Content-Type": "application/json"}, b""),
        ({"Idempotency-Key": "k", "Content-Type": "application/json"}, b'{"lines": ['),
        ({"Idempotency-Key": "k", "Content-Type": "application/json"}, b"\xff\xfe"),
        ({"Idempotency-Key": "k", "Content-Type": "application/json"}, b"[]"),
        ({"Idempotency-Key": "k", "Content-Type": "application/json"}, b'{"lines": []}'),
        ({"Idempotency-Key": "k", "Content-Type": "application/json"}, b'{"lines": [], "x": 1}'),
    ],
)
async def test_refusals_are_fastapis(
    app: FastAPI,
    client: httpx.AsyncClient,
    customer: dict[str, Any],
    headers: dict[str, str],
    content: bytes | None,
) -> None:
    def send(auth: dict[str, str]) -> Send:
        sent = {**auth, **headers}
        if content is None:
            return lambda: client.post("/v1/orders", json={"lines": []}, headers=sent)
        return lambda: client.post("/v1/orders", content=content, headers=sent)

    for auth in (customer["headers"], {}, {"Authorization": "Bearer not-a-token"}):
        direct, solved = await both_ways(app, send(auth))
        assert direct == solved
        assert direct["status"] in (400, 401, 415, 422), direct


async def test_duplicate_lines_and_scopes(
    app: FastAPI, client: httpx.AsyncClient, staff: dict[str, Any], admin: dict[str, Any]
) -> None:
    product, _ = await stocked_product(client, staff, 5)
    line = {"product_id": product["id"], "quantity": 1}
    twice = {**admin["headers"], "Idempotency-Key": "twice"}
    direct, solved = await both_ways(
        app, lambda: client.post("/v1/orders", json={"lines": [line, line]}, headers=twice)
    )
    assert direct == solved
    assert direct["status"] == 422
    created = await client.post(
        "/v1/api-keys",
        json={"name": "reader", "scopes": ["catalog:read"]},
        headers=admin["headers"],
    )
    assert created.status_code == 201, created.text
    reader = {"Authorization": f"Bearer {created.json()['secret']}", "Idempotency-Key": "r-1"}
    direct, solved = await both_ways(
        app, lambda: client.post("/v1/orders", json={"lines": [line]}, headers=reader)
    )
    assert direct == solved
    assert direct["status"] == 403


async def test_a_browser_session_still_needs_its_csrf_token(
    app: FastAPI, client: httpx.AsyncClient, staff: dict[str, Any], customer: dict[str, Any]
) -> None:
    product, _ = await stocked_product(client, staff, 5)
    signed = await sign_in(client, customer["email"], headers={"Origin": SAME_ORIGIN})
    assert signed.status_code == 200, signed.text
    use_cookie(client, SESSION_COOKIE, set_cookies(signed)[SESSION_COOKIE].value)
    body = {"lines": [{"product_id": product["id"], "quantity": 1}]}

    def send(csrf: str | None) -> Send:
        def post() -> Awaitable[httpx.Response]:
            headers = {"Origin": SAME_ORIGIN, "Idempotency-Key": uuid.uuid4().hex}
            if csrf is not None:
                headers["X-CSRF-Token"] = csrf
            return client.post("/v1/orders", json=body, headers=headers)

        return post

    direct, solved = await both_ways(app, send(None))
    assert direct == solved
    assert direct["status"] == 403
    direct, solved = await both_ways(app, send(signed.json()["csrf_token"]))
    assert direct == solved
    assert direct["status"] == 201


async def _dependency() -> int:
    return 1


async def _endpoint(value: Annotated[int, Depends(_dependency)]) -> int:
    return value


async def _direct(request: Request, payload: Any) -> Response | None:
    return None


def test_a_direct_route_refuses_to_build_when_a_dependency_is_not_called() -> None:
    router = APIRouter()
    with pytest.raises(TypeError, match="the direct path calls"):
        router.add_api_route("/x", _endpoint, route_class_override=direct_route(_direct, calls=()))
    router.add_api_route(
        "/y", _endpoint, route_class_override=direct_route(_direct, calls=(_dependency,))
    )


async def test_a_direct_route_refuses_to_run_under_a_router_that_adds_a_dependency() -> None:
    inner = APIRouter()
    inner.add_api_route(
        "/y",
        _endpoint,
        methods=["POST"],
        route_class_override=direct_route(_direct, calls=(_dependency,)),
    )
    app = FastAPI()
    app.include_router(inner, dependencies=[Depends(_other_dependency)])
    # FastAPI builds an included route's handler with the router's dependencies merged
    # in when the route is first served: that is where the direct path refuses.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
        with pytest.raises(TypeError, match="the direct path calls"):
            await client.post("/y", json={})


async def _other_dependency() -> int:
    return 2


async def _taking_a_list(body: list[int], value: Annotated[int, Depends(_dependency)]) -> int:
    return value


async def _answering(request: Request, payload: Any) -> Response | None:
    """Answers a JSON object itself, saying whether FastAPI's exit stacks were set up."""
    if not isinstance(payload, dict):
        return None
    return Response(str("fastapi_inner_astack" in request.scope))


@pytest.mark.parametrize("included", [False, True])
async def test_the_direct_path_skips_fastapis_request_wrapper_and_hands_back_the_body(
    included: bool,
) -> None:
    app = FastAPI()
    router = app.router if not included else APIRouter()
    router.add_api_route(
        "/y",
        _taking_a_list,
        methods=["POST"],
        route_class_override=direct_route(_answering, calls=(_dependency,)),
    )
    if included:
        app.include_router(router)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
        answered = await client.post("/y", json={})
        handed_back = await client.post("/y", json=[1])  # FastAPI's handler, body replayed
        malformed = await client.post(
            "/y", content=b"{", headers={"content-type": "application/json"}
        )
        wrong_method = await client.get("/y")
    assert answered.text == "False"  # no `request_response` wrapper on the direct path
    assert handed_back.status_code == 200
    assert handed_back.json() == 1  # the endpoint ran, its dependency solved
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["type"] == "json_invalid"
    assert wrong_method.status_code == 405
