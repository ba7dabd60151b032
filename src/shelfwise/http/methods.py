"""`405 Method Not Allowed` with the resource's real `Allow` set (RFC 9110 §15.5.6).

Starlette answers 405 from the *first* route whose path matches, so a resource served
by several routes (`GET`, `PATCH` and `DELETE /v1/products/{id}` are three) advertised
only that route's methods. The set is computed here from every route matching the path.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import Match, compile_path
from starlette.types import Scope

# Order of the header: the usual reading order. These are the methods any route here can
# serve; each is tried against the router as a request would be.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(scope: Scope) -> list[str]:
    """The methods of the resource at this request's path.

    Routes in the OpenAPI document answer from it: the most specific template that
    matches the path (`/v1/users/contacts` beats `/v1/users/{user_id}`), so `Allow` and
    the document agree. Other routes (the console, static files) are asked of the
    router's own `matches`, method by method: FastAPI nests included routers in objects
    of its own, and `matches` is the one interface they all keep."""
    app = scope.get("app")
    path = scope.get("path", "")
    documented = _documented_methods(app, path)
    if documented is not None:
        return documented
    routes = getattr(getattr(app, "router", None), "routes", ())
    return [
        method
        for method in METHODS
        if any(
            route.matches({**scope, "type": "http", "method": method})[0] is Match.FULL
            for route in routes
        )
    ]


def _documented_methods(app: Any, path: str) -> list[str] | None:
    openapi = getattr(app, "openapi", None)
    if openapi is None:
        return None
    matching = [
        (template, item)
        for template, item in openapi().get("paths", {}).items()
        if compile_path(template)[0].match(path)
    ]
    if not matching:
        return None
    _, item = min(matching, key=lambda pair: pair[0].count("{"))
    return [method for method in METHODS if method.lower() in item]


def allow_header(scope: Scope) -> str:
    return ", ".join(allowed_methods(scope))
