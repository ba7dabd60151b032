"""The ASGI application: middleware stack, routers, lifespan.

Middleware order (outermost first) — each layer sees everything inside it:

1. RequestId      — assigns the id first, so every later layer can log and echo it
2. AccessLog      — one line per request, timed around everything below
3. Metrics        — RED metrics by route template
4. ErrorBoundary  — anything unexpected becomes a problem+json 500 *inside* the layers
                    above, so even failures are logged, counted and carry a request id
5. GZip           — compresses responses over the threshold
6. BodySizeLimit  — refuses oversized bodies before routing reads them
   (security headers, rate limits and sessions slot in between 4 and 6 — see
   docs/decisions/0002-middleware-order.md)
7. routes, whose dependencies do authentication and authorization per route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from shelfwise import __version__
from shelfwise.catalog.router import router as catalog_router
from shelfwise.clock import Clock, SystemClock
from shelfwise.config import Settings, load_settings
from shelfwise.context import AppContext
from shelfwise.db import open_database
from shelfwise.embedded import start_embedded
from shelfwise.http.limits import BodySizeLimitMiddleware
from shelfwise.http.observe import AccessLogMiddleware, MetricsMiddleware
from shelfwise.http.ops import router as ops_router
from shelfwise.http.pagination import CursorCodec
from shelfwise.http.problems import ErrorBoundaryMiddleware, install_problem_handlers
from shelfwise.http.request_id import RequestIdMiddleware
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.router import router as identity_router
from shelfwise.identity.tokens import TokenIssuer
from shelfwise.inventory.router import router as inventory_router
from shelfwise.observability.logging import configure_logging
from shelfwise.orders.router import router as orders_router

log = structlog.get_logger("shelfwise.app")


def resolve_database_url(settings: Settings) -> str:
    return settings.database_url or start_embedded(Path(settings.data_dir))


def build_context(settings: Settings, database_url: str, clock: Clock) -> AppContext:
    return AppContext(
        settings=settings,
        db=open_database(settings, database_url),
        clock=clock,
        hasher=PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        tokens=TokenIssuer(
            keys={settings.jwt_key_id: settings.jwt_secret.get_secret_value().encode()},
            signing_kid=settings.jwt_key_id,
            issuer=settings.jwt_issuer,
            ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        ),
        cursors=CursorCodec(settings.cursor_secret.get_secret_value().encode()),
    )


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = build_context(settings, resolve_database_url(settings), clock or SystemClock())
        app.state.ctx = ctx
        log.info("started", env=settings.env.value, version=__version__)
        try:
            yield
        finally:
            await ctx.db.dispose()
            ctx.hasher.close()
            log.info("stopped")

    app = FastAPI(
        title="Shelfwise",
        version=__version__,
        summary="Real-time inventory and orders. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(AccessLogMiddleware, enabled=settings.access_log),
            Middleware(MetricsMiddleware),
            Middleware(ErrorBoundaryMiddleware),
            Middleware(GZipMiddleware, minimum_size=settings.gzip_min_bytes),
            Middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
    )
    install_problem_handlers(app)
    app.include_router(ops_router)
    app.include_router(identity_router)
    app.include_router(catalog_router)
    app.include_router(inventory_router)
    app.include_router(orders_router)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    return app
