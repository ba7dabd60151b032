"""A route table in front of the app's router: the routes no earlier route can shadow,
found by a dictionary look-up instead of FastAPI's walk (decision 0045).

FastAPI tries an app's routes one by one on every request. For `POST /v1/orders` that
was the app's own two routes, then every catalog route (each with a save and restore of
FastAPI's scope keys), then the orders router — which answered "matches", threw its
child scope away and was asked again to match, route by route, when it handled the
request: ~18-21 µs of routing per order, ~11-13 µs per product read.

The table is derived from the app's routes, never written by hand. Walking them in
FastAPI's own order, a route inside an included router enters the table for a method
when no route before it can fully match a request it matches:

- a path without parameters is checked exactly: each earlier route is asked whether it
  matches that path (its own regular expression);
- a path with parameters is compared with each earlier route segment by segment (two
  different literal segments, or a different number of segments, cannot match the same
  path); anything else — a `path` parameter, a `Host` route, an unknown kind of route —
  counts as a possible match, and the table stops before what it cannot judge.

So a route in the table is the route FastAPI's walk would select for every request it
matches, and a request the table does not hold (404s, 405s, mounts, websockets, routes
with a parameter before the last segment) goes through the router exactly as before.

On a hit, the request gets what FastAPI's routing gives it, in FastAPI's order: the
route's own `matches` (path parameters converted, `scope["endpoint"]`,
`scope["route"]`), the router and form-limit keys, the included router and the
effective route context FastAPI's handlers read, and the route selected for FastAPI's
server span. `tests/unit/test_route_table.py` routes every route of the app both ways
and compares the scopes.

The table is built on the first request and again when routes are added to the app
(its router's version or length changes). Routes added later to a router that was
already included are not seen by it; no code does that after the first request.
On a FastAPI whose routing internals differ from the ones read here, no table is
installed at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette._utils import get_route_path
from starlette.convertors import PathConvertor
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

# FastAPI's routing internals this mirrors (fastapi/routing.py). All must be present.
_INTERNALS = (
    "_IncludedRouter",
    "_EffectiveRouteContext",
    "_apply_router_form_limits",
    "_get_fastapi_scope",
    "_update_scope",
    "_restore_fastapi_scope_key",
    "_route_selected",
    "_FASTAPI_INCLUDED_ROUTER_KEY",
    "_FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY",
    "_SCOPE_MISSING",
)
_fa: Any = fastapi.routing


def _internals_present() -> bool:
    return all(hasattr(_fa, name) for name in _INTERNALS)


@dataclass(frozen=True, slots=True)
class _Pattern:
    """What decides whether a route can match a path: its template, parameters and
    methods (None or empty: any)."""

    path_format: str
    regex: Any
    convertors: dict[str, Any]
    methods: frozenset[str] | None

    def takes(self, method: str) -> bool:
        return not self.methods or method in self.methods

    @property
    def is_static(self) -> bool:
        return not self.convertors


@dataclass(frozen=True, slots=True)
class Target:
    """A route in the table: the route, FastAPI's context for it in its router, and the
    included routers around it, outermost first."""

    route: APIRoute
    context: Any  # fastapi.routing._EffectiveRouteContext
    chain: tuple[Any, ...]  # fastapi.routing._IncludedRouter, outermost first


class _Opaque:
    """A route the table cannot judge: it may match any request."""


OPAQUE = _Opaque()
# One route in FastAPI's matching order: the route to be served (None: not one the table
# serves) and its pattern (None: it never matches an HTTP request).
_Walked = tuple[Target | None, _Pattern | _Opaque | None]


def _pattern_of(route: Any) -> _Pattern | _Opaque | None:
    if isinstance(route, (WebSocketRoute, APIWebSocketRoute)):
        return None  # matches websocket scopes only
    if isinstance(route, (Route, Mount)) or (
        isinstance(route, _fa._EffectiveRouteContext) and isinstance(route.original_route, APIRoute)
    ):
        methods = getattr(route, "methods", None)
        return _Pattern(
            route.path_format,
            route.path_regex,
            dict(route.param_convertors),
            frozenset(methods) if methods else None,
        )
    return OPAQUE  # Host (matches on headers), frontend groups, anything else


def _walk(routes: Sequence[Any], chain: tuple[Any, ...] = ()) -> Iterator[_Walked]:
    """The app's routes in the order FastAPI tries them."""
    for route in routes:
        if isinstance(route, _fa._IncludedRouter):
            yield from _walk(route.effective_candidates(), (*chain, route))
        elif isinstance(route, _fa._EffectiveRouteContext) and route.starlette_route is not None:
            yield None, _pattern_of(route.starlette_route)
        elif isinstance(route, _fa._EffectiveRouteContext):
            original = route.original_route
            target = Target(original, route, chain) if isinstance(original, APIRoute) else None
            yield target, _pattern_of(route)
        else:
            yield None, _pattern_of(route)


def _segments(pattern: _Pattern) -> list[str | None] | None:
    """The path's segments, None for one holding a parameter; None when a parameter can
    span segments."""
    if any(isinstance(c, PathConvertor) for c in pattern.convertors.values()):
        return None
    return [None if "{" in segment else segment for segment in pattern.path_format.split("/")]


def _disjoint(a: _Pattern, b: _Pattern) -> bool:
    """True only when no path can match both."""
    if a.is_static:
        return b.regex.match(a.path_format) is None
    if b.is_static:
        return a.regex.match(b.path_format) is None
    sa, sb = _segments(a), _segments(b)
    if sa is None or sb is None:
        pa, pb = a.path_format.split("{", 1)[0], b.path_format.split("{", 1)[0]
        return not (pa.startswith(pb) or pb.startswith(pa))
    if len(sa) != len(sb):
        return True
    return any(x is not None and y is not None and x != y for x, y in zip(sa, sb, strict=True))


def _last_segment_parent(pattern: _Pattern) -> str | None:
    """`/v1/products/` for `/v1/products/{product_id}`: a path whose only parameter is its
    whole last segment is looked up by what precedes it."""
    segments = _segments(pattern)
    if segments is None or segments[-1] is not None or None in segments[:-1]:
        return None
    parent, _, last = pattern.path_format.rpartition("/")
    if not (last.startswith("{") and last.endswith("}") and last.count("{") == 1):
        return None
    return parent + "/"


@dataclass
class Tables:
    static: dict[tuple[str, str], Target]
    by_parent: dict[tuple[str, str], Target]


def build_tables(routes: Sequence[BaseRoute]) -> Tables:
    tables = Tables({}, {})
    earlier: list[_Pattern] = []
    for target, pattern in _walk(routes):
        if pattern is OPAQUE:
            break  # nothing after it can be judged
        if not isinstance(pattern, _Pattern):
            continue
        if target is not None and pattern.methods:
            parent = None if pattern.is_static else _last_segment_parent(pattern)
            for method in sorted(pattern.methods):
                shadowed = any(e.takes(method) and not _disjoint(pattern, e) for e in earlier)
                if shadowed:
                    continue
                if pattern.is_static:
                    tables.static.setdefault((method, pattern.path_format), target)
                elif parent is not None:
                    tables.by_parent.setdefault((method, parent), target)
        earlier.append(pattern)
    return tables


class RouteTable:
    """The app router's dispatch, with the table's routes found first."""

    def __init__(self, router: fastapi.routing.APIRouter, fallback: ASGIApp) -> None:
        self.router = router
        self.fallback = fallback
        self._built_for: tuple[int, int] | None = None
        self._tables = Tables({}, {})

    def tables(self) -> Tables:
        version = (self.router._routes_version, len(self.router.routes))
        if version != self._built_for:
            self._tables = build_tables(self.router.routes)
            self._built_for = version
        return self._tables

    def lookup(self, scope: Scope) -> Target | None:
        tables = self.tables()
        path = get_route_path(scope)
        method = scope["method"]
        target = tables.static.get((method, path))
        if target is None and tables.by_parent:
            target = tables.by_parent.get((method, path[: path.rfind("/") + 1]))
        return target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.lookup(scope) if scope["type"] == "http" else None
        if target is None or not await self._serve(target, scope, receive, send):
            await self.fallback(scope, receive, send)

    async def _serve(self, target: Target, scope: Scope, receive: Receive, send: Send) -> bool:
        """What FastAPI's `APIRouter.app`, `_IncludedRouter.handle` and `_handle_selected`
        do once the walk has found `target`; False (nothing done) if it does not match."""
        route, context = target.route, target.context
        fastapi_scope = _fa._get_fastapi_scope(scope)
        effective_key = _fa._FASTAPI_EFFECTIVE_ROUTE_CONTEXT_KEY
        previous = fastapi_scope.get(effective_key, _fa._SCOPE_MISSING)
        fastapi_scope[effective_key] = context  # as `_match` does around `matches`
        try:
            match, child_scope = route.matches(scope)
        finally:
            _fa._restore_fastapi_scope_key(scope, effective_key, previous)
        if match is not Match.FULL:
            return False
        _fa._apply_router_form_limits(scope, self.router.form_limits)
        if "router" not in scope:
            scope["router"] = self.router
        for included in target.chain:
            _fa._apply_router_form_limits(scope, included.include_context.form_limits)
            fastapi_scope[_fa._FASTAPI_INCLUDED_ROUTER_KEY] = included
        _fa._update_scope(scope, child_scope)
        _fa._route_selected(scope=scope, path=context.path_format, mount=False)
        fastapi_scope[effective_key] = context
        scope["route"] = route
        await route.handle(scope, receive, send)
        return True


def install_route_table(app: FastAPI) -> RouteTable | None:
    """Put a route table in front of `app`'s router; None (nothing installed) when FastAPI's
    internals differ or the router has middleware of its own (the table would skip it)."""
    router = app.router
    if not _internals_present() or router.middleware_stack != router.app:
        return None
    table = RouteTable(router, router.middleware_stack)
    router.middleware_stack = table
    return table
