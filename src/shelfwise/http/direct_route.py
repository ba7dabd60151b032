"""A route whose well-formed requests skip FastAPI's per-request dependency solving.

FastAPI solves a route's dependency tree on every request: for `POST /v1/orders` six
dependencies (scope check, principal, bearer, cookie, context twice) and the header and
body parameters, ~40 % of everything the stack spent around the use case
(docs/decisions/0040-direct-route-for-placing-orders.md).

A `DirectRoute` is still an `APIRoute`: FastAPI builds its OpenAPI operation, its body
size limit and its exception handling exactly as for any route. Only the handler
differs: when the body is JSON, the route's `direct` function gets the parsed body and
either answers (the well-formed request: it calls the same dependency functions and the
same endpoint itself) or returns None *before any side effect*, and FastAPI's own
handler answers instead — every refusal, validation error and problem document is
FastAPI's. Dependency overrides (tests) always take FastAPI's path. The route names the
dependencies its `direct` function calls; a route whose declared dependencies differ —
its own or a router's it is included in — refuses to build, so a dependency added to the
endpoint or its router cannot be skipped silently.
"""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator
from functools import lru_cache
from typing import Any, NoReturn

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from shelfwise.http.routes import effective_dependant

# The parsed JSON body → the answer, or None to let FastAPI's handler answer.
Direct = Callable[[Request, Any], Awaitable[Response | None]]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@lru_cache(maxsize=64)
def is_json(content_type: str | None) -> bool:
    """FastAPI's own test for a JSON body (`fastapi/routing.py`), remembered: a client
    sends the same `Content-Type` on every request."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def direct_route(direct: Direct, *, calls: Collection[object]) -> type[APIRoute]:
    """An `APIRoute` class for `add_api_route(..., route_class_override=...)`; `calls`
    are the dependency callables `direct` calls itself (the whole tree's)."""

    class DirectRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            # Its own dependencies and those of the routers it is included in.
            dependant = effective_dependant(self)
            if dependant is None:  # FastAPI's internals differ: its own handler only
                return super().get_route_handler()
            declared = set(_dependency_calls(dependant))
            if declared != set(calls):
                raise TypeError(
                    f"{self.path}: the direct path calls {set(calls)}, the route declares "
                    f"{declared}"
                )
            return _handler(direct, super().get_route_handler())

    return DirectRoute


def _dependency_calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _dependency_calls(dependency)


def _handler(direct: Direct, solved: Handler) -> Handler:
    async def handle(request: Request) -> Response:
        if request.app.dependency_overrides or not is_json(request.headers.get("content-type")):
            return await solved(request)
        try:
            await request.body()
        except Exception as exc:
            # The body could not be read (too large, client gone): FastAPI's handler
            # maps that failure, so it reads the same failure again.
            return await solved(_failing_read(request, exc))
        try:
            payload = await request.json()  # kept on the request for FastAPI's path
        except ValueError:
            return await solved(request)  # its `json_invalid` 422 (or 400)
        response = await direct(request, payload)
        return response if response is not None else await solved(request)

    return handle


def _failing_read(request: Request, exc: Exception) -> Request:
    async def receive() -> NoReturn:
        raise exc

    return Request(request.scope, receive)
