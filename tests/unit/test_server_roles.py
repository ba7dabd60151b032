"""`shelfwise serve --role`: which paths each role answers, and the 421 for the others."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from shelfwise.config import ServerRole
from shelfwise.live.roles import RoleGateMiddleware, serves


@pytest.mark.parametrize(
    ("role", "path", "answered"),
    [
        (ServerRole.ALL, "/v1/stream", True),
        (ServerRole.ALL, "/v1/orders", True),
        (ServerRole.LIVE, "/v1/stream", True),
        (ServerRole.LIVE, "/v1/ws", True),
        (ServerRole.LIVE, "/v1/poll", True),
        (ServerRole.LIVE, "/v1/orders", False),
        (ServerRole.LIVE, "/v1/stock", False),  # the snapshot is a read: API instances
        (ServerRole.LIVE, "/", False),
        (ServerRole.API, "/v1/stream", False),
        (ServerRole.API, "/v1/poll", False),
        (ServerRole.API, "/v1/orders", True),
        (ServerRole.API, "/v1/streams", True),  # exact paths, not prefixes
    ],
)
def test_each_role_answers_its_paths(role: ServerRole, path: str, answered: bool) -> None:
    assert serves(role, path) is answered


@pytest.mark.parametrize("role", [ServerRole.API, ServerRole.LIVE])
@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_every_role_answers_health_and_metrics(role: ServerRole, path: str) -> None:
    assert serves(role, path)


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_a_misrouted_request_gets_421_problem_json() -> None:
    gate = RoleGateMiddleware(ok, role=ServerRole.API)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(gate), base_url="http://t") as c:
        misrouted = await c.get("/v1/stream?channels=stock")
        served = await c.get("/v1/products")
    assert misrouted.status_code == 421
    assert misrouted.headers["content-type"] == "application/problem+json"
    body = misrouted.json()
    assert body["code"] == "wrong_role"
    assert body["role"] == "api"
    assert "live instance" in body["detail"]
    assert served.status_code == 200


async def test_a_misrouted_websocket_is_closed_before_it_is_accepted() -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    gate = RoleGateMiddleware(ok, role=ServerRole.LIVE)
    await gate({"type": "websocket", "path": "/v1/orders"}, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "wrong_role"}]


@pytest.mark.parametrize(
    ("role", "first"),
    [(ServerRole.LIVE, "/v1/stream"), (ServerRole.API, "/v1/products/{product_id}")],
)
def test_each_role_routes_its_hottest_paths_first(role: ServerRole, first: str) -> None:
    """Routing tries routes one by one: a role's own hot routes come before the rest."""
    from shelfwise.app import create_app
    from shelfwise.config import Environment, Settings

    app = create_app(Settings(_env_file=None, env=Environment.TEST, server_role=role))  # type: ignore[call-arg]
    # The OpenAPI document lists paths in the order the routes are tried.
    paths = [path for path in app.openapi()["paths"] if path.startswith("/v1/")]
    assert paths[0] == first
    assert "/v1/stream" in paths  # nothing dropped, only reordered
    assert "/v1/orders" in paths
