"""The route table (`http/route_table.py`, decision 0045) routes every request as FastAPI's
walk does: for every route of the app (each server role), a request to it — and to
near misses: 404s, 405s, trailing slashes, malformed ids, a `root_path` — reaches the
same route with the same scope (route, endpoint, path parameters, FastAPI's keys), or the
same refusal; and a route an earlier one could shadow is left out of the table."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry._api import _RequestTelemetry
from starlette.exceptions import HTTPException
from starlette.routing import Host, Mount, Router

from shelfwise.app import create_app
from shelfwise.config import Environment, ServerRole, Settings
from shelfwise.http.route_table import RouteTable, _walk, install_route_table

SAMPLES = {"str": "x1", "int": "7", "float": "1.5", "uuid": str(uuid.UUID(int=14)), "path": "a/b"}
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")


class Served(Exception):
    """Raised by a stubbed route instead of running its endpoint."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope


def _stub_every_route(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    async def served(scope: dict[str, Any], receive: Any, send: Any) -> None:
        snapshot = dict(scope)
        snapshot["fastapi"] = dict(scope.get("fastapi", {}))
        raise Served(snapshot)

    for target, _ in _walk(app.router.routes):
        if target is not None:
            monkeypatch.setattr(target.route, "handle", served, raising=False)
    for route in _every_route(app.router.routes):
        monkeypatch.setattr(route, "handle", served, raising=False)


def _every_route(routes: list[Any]) -> Iterator[Any]:
    from fastapi.routing import _EffectiveRouteContext, _IncludedRouter

    for route in routes:
        if isinstance(route, _IncludedRouter):
            yield from _every_route(route.effective_candidates())
        elif isinstance(route, _EffectiveRouteContext):
            yield route.starlette_route or route.original_route
        else:
            yield route


def _sample_path(route: Any) -> str | None:
    path_format = getattr(route, "path_format", None)
    convertors = getattr(route, "param_convertors", None)
    if not isinstance(path_format, str) or convertors is None:
        return None
    for name, convertor in convertors.items():
        kind = type(convertor).__name__.removesuffix("Convertor").lower()
        path_format = path_format.replace("{" + name + "}", SAMPLES.get(kind, "x1"))
    return path_format


def _requests(app: FastAPI) -> set[tuple[str, str]]:
    paths = {"/", "/nope", "/v1/orders/", "/v1/products/not-a-uuid", "/v1/products/a/b/c"}
    for route in _every_route(app.router.routes):
        sample = _sample_path(route)
        if sample is not None:
            paths |= {sample, sample + "/", sample.rstrip("/") + "x"}
    return {(method, path) for path in paths for method in METHODS}


async def _route(app: FastAPI, dispatch: Any, method: str, path: str, root_path: str) -> Any:
    """What `dispatch` did with the request: the scope a route was served with, the
    refusal it raised (404, 405) or what it sent (a redirect); and the route FastAPI's
    server span was told (its name and `http.route`)."""
    telemetry = _RequestTelemetry(span=None, span_method=method)
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": root_path + path,
        "raw_path": (root_path + path).encode(),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"t.test")],
        "state": {},
        "app": app,
        "fastapi.telemetry": telemetry,
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await dispatch(scope, None, send)
    except Served as served:
        return ("served", served.scope, telemetry.route)
    except HTTPException as refused:
        return ("refused", refused.status_code, refused.headers, telemetry.route)
    return ("sent", sent, telemetry.route)


async def _assert_same_routing(app: FastAPI, requests: set[tuple[str, str]]) -> int:
    """Each request routed by FastAPI's walk and by the table; how many the table held."""
    table = app.router.middleware_stack
    assert isinstance(table, RouteTable)
    hits = 0
    for method, path in sorted(requests):
        for root_path in ("", "/api"):
            expected = await _route(app, app.router.app, method, path, root_path)
            got = await _route(app, table, method, path, root_path)
            assert got == expected, (method, root_path + path)
            hits += table.lookup({"method": method, "path": path, "root_path": ""}) is not None
    return hits


@pytest.mark.parametrize("role", list(ServerRole))
async def test_every_route_of_the_app_is_routed_as_fastapi_routes_it(
    role: ServerRole, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(Settings(_env_file=None, env=Environment.TEST, server_role=role))  # type: ignore[call-arg]
    _stub_every_route(app, monkeypatch)
    hits = await _assert_same_routing(app, _requests(app))
    assert hits > 50  # the table served most of them


def test_the_hot_routes_are_in_the_table() -> None:
    app = create_app(Settings(_env_file=None, env=Environment.TEST))  # type: ignore[call-arg]
    table = app.router.middleware_stack
    assert isinstance(table, RouteTable)
    order = table.lookup({"method": "POST", "path": "/v1/orders", "root_path": ""})
    read = table.lookup({"method": "GET", "path": f"/v1/products/{uuid.uuid4()}", "root_path": ""})
    assert order is not None
    assert order.route.path == "/v1/orders"
    assert read is not None
    assert read.route.path == "/v1/products/{product_id}"


async def _noop() -> None:
    pass


def _shadowing_app() -> FastAPI:
    early = APIRouter(prefix="/items")
    early.add_api_route("/{item_id}", _noop, methods=["GET"])
    early.add_api_route("/{item_id}/parts", _noop, methods=["GET"])
    late = APIRouter(prefix="/items")
    late.add_api_route("/special", _noop, methods=["GET", "POST"])  # GET shadowed
    late.add_api_route("/{item_id}", _noop, methods=["PUT"])  # another method: not shadowed
    late.add_api_route("/{other}/{part}", _noop, methods=["GET"])  # /{item_id}/parts overlaps
    late.add_api_route("/{other}/{part}/x", _noop, methods=["GET"])  # more segments
    assets = APIRouter()
    assets.add_api_route("/files/{name}", _noop, methods=["GET"])  # under the mount below
    assets.add_api_route("/filesx/{name}", _noop, methods=["GET"])
    app = FastAPI()
    app.include_router(early)
    app.include_router(late)
    app.mount("/files", Router())
    app.include_router(assets)
    app.router.routes.append(Host("example.test", Router()))
    app.router._mark_routes_changed()
    after_host = APIRouter()
    after_host.add_api_route("/after-host", _noop, methods=["GET"])
    app.include_router(after_host)
    install_route_table(app)
    return app


async def test_a_route_an_earlier_one_could_shadow_is_left_to_fastapi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = _shadowing_app()
    table = app.router.middleware_stack
    assert isinstance(table, RouteTable)
    tables = table.tables()
    assert set(tables.static) == {("POST", "/items/special")}
    assert set(tables.by_parent) == {
        ("GET", "/items/"),
        ("PUT", "/items/"),
        ("GET", "/filesx/"),
    }
    _stub_every_route(app, monkeypatch)
    requests = {
        (method, path)
        for method in ("GET", "POST", "PUT")
        for path in (
            "/items/special",
            "/items/7",
            "/items/7/parts",
            "/items/7/other",
            "/items/7/other/x",
            "/files/a",
            "/filesx/a",
            "/after-host",
        )
    }
    await _assert_same_routing(app, requests)


async def test_routes_added_after_the_first_request_are_seen() -> None:
    app = FastAPI()
    install_route_table(app)
    table = app.router.middleware_stack
    assert isinstance(table, RouteTable)
    assert table.lookup({"method": "GET", "path": "/late", "root_path": ""}) is None
    app.add_api_route("/late", _noop, methods=["GET"])
    target = table.lookup({"method": "GET", "path": "/late", "root_path": ""})
    assert target is None  # a route of the app itself, not of an included router: walked
    router = APIRouter()
    router.add_api_route("/later", _noop, methods=["GET"])
    app.include_router(router)
    later = table.lookup({"method": "GET", "path": "/later", "root_path": ""})
    assert later is not None
    assert isinstance(later.route, APIRoute)


def test_a_router_with_its_own_middleware_gets_no_table() -> None:
    app = FastAPI()
    app.router.middleware_stack = Mount("/x", Router())  # anything but its own dispatch
    assert install_route_table(app) is None
