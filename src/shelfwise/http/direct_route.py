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

The direct path also skips FastAPI's `request_response` wrapper (decision 0047): its two
`AsyncExitStack`s exist for dependencies with `yield`, which the direct path never
solves, and its exception wrapper maps exceptions with the same handlers as the app's
`ExceptionMiddleware` just outside, which then does it. A request the direct function
hands back goes through FastAPI's whole route app, its body replayed.
"""

from __future__ import annotations

import email.message
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator
from functools import lru_cache
from typing import Any, NoReturn

import fastapi.routing
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
            # The route app FastAPI is building with this handler — the route's own, or
            # that of an inclusion (its effective context) — may be served directly.
            owner = _owner_being_built(self)
            _direct_owners(self)[id(owner)] = owner
            return _handler(direct, super().get_route_handler())

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            owner = _owner_serving(self, scope)
            if (
                owner is None
                or id(owner) not in _direct_owners(self)
                or getattr(owner, "max_body_size", None) is not None  # its app limits it
                or scope["method"] not in owner.methods
            ):
                await super().handle(scope, receive, send)  # 405s too
                return
            await _serve_directly(direct, owner.app, scope, receive, send)

    return DirectRoute


def _direct_owners(route: APIRoute) -> dict[int, Any]:
    """The route apps (by identity, kept alive) built with a direct handler."""
    owners: dict[int, Any] = route.__dict__.setdefault("_direct_owners", {})
    return owners


def _owner_being_built(route: APIRoute) -> Any:
    context = fastapi.routing._effective_route_context_var.get()
    return context if getattr(context, "original_route", None) is route else route


def _owner_serving(route: APIRoute, scope: Scope) -> Any:
    """What FastAPI's `APIRoute.handle` serves this request with: the effective context
    the router selected for `route`, or the route itself; None if that cannot be read."""
    read = getattr(fastapi.routing, "_get_scope_effective_route_context", None)
    if read is None:
        return None
    context = read(scope)
    return context if getattr(context, "original_route", None) is route else route


async def _serve_directly(
    direct: Direct, route_app: ASGIApp, scope: Scope, receive: Receive, send: Send
) -> None:
    """`request_response(_handler(direct, ...))` without the wrapper's exit stacks and
    exception mapping, for a request `direct` answers; else `route_app` (FastAPI's)."""
    answer = await _direct_answer(direct, Request(scope, receive, send))
    if isinstance(answer, Response):
        await answer(scope, receive, send)
    else:
        await route_app(scope, answer, send)


async def _direct_answer(direct: Direct, request: Request) -> Response | Receive:
    """`direct`'s answer to `request`; else the `receive` FastAPI's handler reads the
    request from: the server's (body not read: dependency overrides, not JSON), one that
    raises the read's failure again (too large, client gone: FastAPI maps it), or the body
    already read, replayed (a parse failure or a refusal: its `json_invalid`, 400 or 422)."""
    if request.app.dependency_overrides or not is_json(request.headers.get("content-type")):
        return request.receive
    try:
        body = await request.body()
    except Exception as exc:
        return _failing_receive(exc)
    try:
        payload = await request.json()
    except ValueError:
        return _replayed(body, request.receive)
    response = await direct(request, payload)
    return response if response is not None else _replayed(body, request.receive)


def _dependency_calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _dependency_calls(dependency)


def _handler(direct: Direct, solved: Handler) -> Handler:
    """FastAPI's route handler `solved`, with `direct` answering first (`_direct_answer`)."""

    async def handle(request: Request) -> Response:
        answer = await _direct_answer(direct, request)
        if isinstance(answer, Response):
            return answer
        if answer is request.receive:
            return await solved(request)
        return await solved(Request(request.scope, answer))

    return handle


def _failing_receive(exc: Exception) -> Receive:
    async def receive() -> NoReturn:
        raise exc

    return receive


def _replayed(body: bytes, receive: Receive) -> Receive:
    """The body already read, in one message; then the server's `receive` again."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
