"""`PathParamsRoute` (`http/routes.py`): the same answers as FastAPI's own handler — a
valid id reaches the endpoint, a malformed one is the same 422 — without FastAPI's
per-request dependency solving; and any route that declares more than path parameters
(a dependency on its router included) gets FastAPI's handler, so nothing is skipped."""

from __future__ import annotations

import uuid
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response

from shelfwise.http.routes import PathParamsRoute

ID = uuid.UUID("3f0c9a4e-51f1-4f7e-9d55-7b8e0a7f1c2d")


async def read(item_id: uuid.UUID, request: Request) -> Response:
    return Response(f"{item_id} {request.method}", media_type="text/plain")


async def refuse() -> None:
    raise HTTPException(403, "no")


def app_with(route_class: type[fastapi.routing.APIRoute], **include: Any) -> FastAPI:
    router = APIRouter(prefix="/items")
    router.add_api_route("/{item_id}", read, methods=["GET"], route_class_override=route_class)
    app = FastAPI()
    app.include_router(router, **include)
    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t.test") as client:
        return await client.get(path)


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths FastAPI solved dependencies for."""
    calls: list[str] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*, request: Request, **kwargs: Any) -> Any:
        calls.append(request.url.path)
        return await solve(request=request, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


@pytest.mark.parametrize("path", [f"/items/{ID}", "/items/not-a-uuid", f"/items/{ID}x"])
async def test_answers_as_fastapis_own_handler_without_solving(
    path: str, solved: list[str]
) -> None:
    ours = await get(app_with(PathParamsRoute), path)
    assert solved == []
    theirs = await get(app_with(fastapi.routing.APIRoute), path)
    assert solved == [path]
    assert (ours.status_code, ours.json() if ours.status_code == 422 else ours.text) == (
        theirs.status_code,
        theirs.json() if theirs.status_code == 422 else theirs.text,
    )


async def test_the_id_arrives_validated() -> None:
    response = await get(app_with(PathParamsRoute), f"/items/{str(ID).upper()}")
    assert response.text == f"{ID} GET"


async def test_a_dependency_on_the_including_router_is_not_skipped(solved: list[str]) -> None:
    app = app_with(PathParamsRoute, dependencies=[Depends(refuse)])
    response = await get(app, f"/items/{ID}")
    assert response.status_code == 403
    assert solved == [f"/items/{ID}"]


async def test_a_route_with_a_query_parameter_gets_fastapis_handler(solved: list[str]) -> None:
    async def search(item_id: uuid.UUID, q: str = "") -> Response:
        return Response(q)

    router = APIRouter()
    router.add_api_route("/{item_id}", search, route_class_override=PathParamsRoute)
    app = FastAPI()
    app.include_router(router)
    response = await get(app, f"/{ID}?q=mug")
    assert response.text == "mug"
    assert solved == [f"/{ID}"]
