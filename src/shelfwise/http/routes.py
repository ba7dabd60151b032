"""A route class for hot reads whose endpoint takes only path parameters and the request.

For every request FastAPI solves a route's parameters through its dependency machinery:
it builds the query parameters, walks each parameter's annotation again (is it a
sequence?), runs the header, cookie and body passes even when there are none, and
records telemetry data. For the cached `GET /v1/products/{id}` that was the largest
share of a hit that was not the work itself (issue 14, docs/performance.md).
`PathParamsRoute` validates the path parameters with the very pydantic fields FastAPI
built for the route — a malformed id is the same 422 with the same errors — and calls the
endpoint with them and the request. It is still an `APIRoute`: OpenAPI, the route
template, 405s, FastAPI's exit stacks and the exception handlers are unchanged.

Nothing is skipped silently: a route that declares anything else — a query parameter, a
header, a body, a dependency (authentication!), here or on a router it is included in —
gets FastAPI's own handler, as does any route on a FastAPI whose internals differ from
the ones this reads (`_effective_route_context_var`, which carries a router's
dependencies into an included route). The endpoint must return a `Response`: nothing is
serialised for it.

Its sibling `direct_route.py` serves a route with a body and dependencies (`POST
/v1/orders`: the endpoint's own dependency functions called directly when the request is
well-formed). This one needs no per-route code: a route with nothing but path parameters
is fully described by the fields FastAPI built for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import fastapi.routing
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _path_and_request_only(dependant: Dependant) -> bool:
    return not (
        dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.dependencies
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
        or dependant.response_param_name
        or dependant.background_tasks_param_name
        or dependant.security_scopes_param_name
    )


def effective_dependant(route: APIRoute) -> Dependant | None:
    """The dependant FastAPI would solve for `route` here: its own, or the one merged with
    the dependencies of the router it is being included in. None: cannot tell."""
    context_var = getattr(fastapi.routing, "_effective_route_context_var", None)
    if context_var is None:
        return None
    context = context_var.get()
    if context is not None and getattr(context, "original_route", None) is route:
        dependant = getattr(context, "dependant", None)
        return dependant if isinstance(dependant, Dependant) else None
    return route.dependant


class PathParamsRoute(APIRoute):
    def get_route_handler(self) -> Handler:
        dependant = effective_dependant(self)
        if (
            dependant is None
            or not inspect.iscoroutinefunction(dependant.call)
            or not _path_and_request_only(dependant)
        ):
            return super().get_route_handler()
        fields = [(field, field.alias, ("path", field.alias)) for field in dependant.path_params]
        request_name = dependant.request_param_name
        call = dependant.call
        assert call is not None

        async def handler(request: Request) -> Response:
            values: dict[str, Any] = {}
            errors: list[Any] = []
            path_params = request.path_params
            for field, alias, loc in fields:
                value, field_errors = field.validate(path_params.get(alias), values, loc=loc)
                if field_errors:
                    errors.extend(field_errors)
                else:
                    values[field.name] = value
            if errors:
                raise RequestValidationError(errors)
            if request_name is not None:
                values[request_name] = request
            response = await call(**values)
            if not isinstance(response, Response):
                raise TypeError(f"{self.path}: a PathParamsRoute endpoint returns a Response")
            return response

        return handler
