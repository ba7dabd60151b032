"""The ASGI application: middleware stack, routers, lifespan.

Middleware order (outermost first) — each layer sees everything inside it. A layer that
the settings switch off is not installed at all (it would pass every request through):

-  StreamSend      — no behaviour of its own: once an event stream's response start has
                     passed every layer below, its body chunks skip the stack
                     (`live/streaming.py`); all other responses are untouched
0. ProxyHeaders    — only with `trusted_proxies`: client address and scheme from
                     X-Forwarded-* when the peer is one of them; everything after relies
                     on the result
1. Edge            — one layer (`http/edge.py`) doing, in this order: the request id
                     (picked first, bound into every log line), the access log and the RED
                     metrics (timed around everything below), the error boundary
                     (anything unexpected becomes a problem+json 500 *inside* the id, the
                     log and the metrics) and the security headers (on every response,
                     refusals and the boundary's 500 included)
   RequestIdSpan   — only when tracing is on: the request id on FastAPI's server span
   RoleGate        — only with `serve --role api|live`: a path of the other role gets 421
2. CORS            — only with `cors_origins`: answers preflights before any limit or auth
                     is spent on them
3. RequestTimeout  — a deadline per request (streams exempt), watched by one timer per
                     process (`http/timeouts.py`)
4. RateLimit       — only with rate limits on: per-IP budget for anonymous requests,
                     per-client concurrency cap, RateLimit headers on every response
5. Compression     — gzip over the threshold for clients that accept it
                     (`http/compression.py`)
6. BodySizeLimit   — refuses oversized bodies before routing reads them
7. routes, whose dependencies authenticate (then apply the per-principal rate limit and,
   for cookie sessions, CSRF) and authorize per route.

See docs/decisions/0002-middleware-order.md for the reasons.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import structlog
from fastapi import FastAPI
from redis.asyncio import Redis
from starlette.middleware import Middleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from shelfwise import __version__
from shelfwise.catalog.cache import CatalogCache
from shelfwise.catalog.router import router as catalog_router
from shelfwise.clock import Clock, SystemClock
from shelfwise.config import ServerRole, Settings, load_settings
from shelfwise.context import AppContext, RatePolicies
from shelfwise.db import Database, libpq_url, open_database
from shelfwise.driverpool import DriverPool
from shelfwise.embedded import start_embedded
from shelfwise.http.compression import CompressionMiddleware
from shelfwise.http.cors import ProblemCORSMiddleware
from shelfwise.http.docs import install_docs
from shelfwise.http.edge import EdgeMiddleware
from shelfwise.http.limits import BodySizeLimitMiddleware
from shelfwise.http.openapi import install_problem_docs
from shelfwise.http.ops import router as ops_router
from shelfwise.http.pagination import CursorCodec
from shelfwise.http.problems import install_problem_handlers
from shelfwise.http.ratelimit import RateLimiter, RateLimitMiddleware, bearer_subject
from shelfwise.http.route_table import install_route_table
from shelfwise.http.timeouts import RequestTimeoutMiddleware
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.refresh import RefreshPolicy
from shelfwise.identity.router import router as identity_router
from shelfwise.identity.service import ActiveRoles
from shelfwise.identity.sessions import (
    PostgresSessionStore,
    RedisSessionStore,
    SessionPolicy,
    SessionStore,
)
from shelfwise.identity.tokens import TokenIssuer
from shelfwise.identity.users_router import router as users_router
from shelfwise.imports.router import router as imports_router
from shelfwise.inventory.router import router as inventory_router
from shelfwise.jobs.router import admin_router as jobs_admin_router
from shelfwise.jobs.router import router as jobs_router
from shelfwise.live.auth import Reauthorization, recheck_for
from shelfwise.live.drain import drain_on_signals, on_drain
from shelfwise.live.feeds import failover_feed, postgres_feed, redis_feed
from shelfwise.live.hub import FANOUT_SHARE, LIVE_ROLE_FANOUT_SHARE, Hub
from shelfwise.live.roles import RoleGateMiddleware
from shelfwise.live.router import router as live_router
from shelfwise.live.streaming import StreamSendMiddleware
from shelfwise.live.ws import router as live_ws_router
from shelfwise.observability.debug_router import router as debug_router
from shelfwise.observability.logging import configure_logging
from shelfwise.observability.loop import LoopWatch
from shelfwise.observability.metrics import INSTANCE_INFO
from shelfwise.observability.trace_http import FASTAPI_TELEMETRY, RequestIdSpanMiddleware
from shelfwise.observability.tracing import configure_tracing
from shelfwise.orders.admission import HotLevelGate, StoredKeys
from shelfwise.orders.router import router as orders_router
from shelfwise.shared_state import FailClosedSessions, redis_client
from shelfwise.uploads.router import is_streamed_upload
from shelfwise.uploads.router import router as images_router
from shelfwise.web.router import install_dashboard
from shelfwise.webhooks.router import router as webhooks_router

log = structlog.get_logger("shelfwise.app")

CORS_ALLOW_HEADERS = [
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-Match",
    "If-None-Match",
    "X-CSRF-Token",
    "X-Request-ID",
    "Last-Event-ID",
]
CORS_EXPOSE_HEADERS = [
    "X-Request-ID",
    "ETag",
    "Link",
    "Location",
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "Idempotent-Replayed",
    "Server-Timing",
    "X-Stream-Position",
]


def resolve_database_url(settings: Settings) -> str:
    return settings.database_url or start_embedded(Path(settings.data_dir))


def _token_issuer(settings: Settings) -> TokenIssuer:
    keys = {kid: key.get_secret_value().encode() for kid, key in settings.jwt_previous_keys.items()}
    keys[settings.jwt_key_id] = settings.jwt_secret.get_secret_value().encode()
    return TokenIssuer(
        keys=keys,
        signing_kid=settings.jwt_key_id,
        issuer=settings.jwt_issuer,
        ttl=timedelta(seconds=settings.access_token_ttl_seconds),
    )


def _session_store(settings: Settings, db: Database, redis: Redis | None) -> SessionStore:
    policy = SessionPolicy(
        idle=timedelta(minutes=settings.session_idle_minutes),
        absolute=timedelta(hours=settings.session_absolute_hours),
    )
    if redis is not None:
        return FailClosedSessions(RedisSessionStore(redis, policy))  # shared_state.py
    return PostgresSessionStore(db.sessions, policy)


def build_context(
    settings: Settings, database_url: str, clock: Clock, limiter: RateLimiter
) -> AppContext:
    db = open_database(settings, database_url)
    redis = redis_client(settings.redis_url) if settings.redis_url else None
    driver = DriverPool(
        libpq_url(database_url),
        max_size=settings.db_pool_size,
        timeout=settings.db_pool_timeout_seconds,
        prepare=not settings.db_transaction_pooling,
        slow_statement_ms=settings.db_slow_statement_ms,
        held_warn_seconds=settings.db_connection_held_warn_seconds,
        breaker=db.breaker,  # one view per process of whether the database is up
    )
    return AppContext(
        settings=settings,
        db=db,
        clock=clock,
        hasher=PasswordHasher(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            parallelism=settings.argon2_parallelism,
        ),
        tokens=_token_issuer(settings),
        cursors=CursorCodec(settings.cursor_secret.get_secret_value().encode()),
        limiter=limiter,
        policies=RatePolicies.from_settings(settings),
        session_store=_session_store(settings, db, redis),
        refresh_policy=RefreshPolicy(
            idle=timedelta(days=settings.refresh_idle_days),
            absolute=timedelta(days=settings.refresh_absolute_days),
        ),
        redis=redis,
        driver=driver,
        roles=ActiveRoles(driver),
        admission=HotLevelGate(StoredKeys(driver)),
        catalog_cache=CatalogCache(
            product_ttl=settings.catalog_product_ttl_seconds,
            refresh_ahead=settings.catalog_cache_refresh_ahead,
        ),
    )


async def start_hub(ctx: AppContext, *, database_url: str) -> Hub:
    """The live hub of this process, woken by Redis pub/sub when configured, else NOTIFY."""
    settings = ctx.settings
    hub = Hub(
        ctx.driver,  # the stream is read back on psycopg, not the ORM
        window=settings.live_window,
        queue_limit=settings.live_queue_limit,
        heartbeat_seconds=settings.live_heartbeat_seconds,
        rechecks=Reauthorization(recheck_for(ctx), interval=settings.live_recheck_seconds),
        # A live-role process flushes back to back: no requests to leave room for.
        fanout_share=(
            LIVE_ROLE_FANOUT_SHARE if settings.server_role is ServerRole.LIVE else FANOUT_SHARE
        ),
    )
    poll = settings.live_feed_poll_seconds
    notify = postgres_feed(libpq_url(settings.direct_url(database_url)), poll_seconds=poll)
    wake = (
        failover_feed(redis_feed(ctx.redis, poll_seconds=poll), notify)  # Redis down: NOTIFY
        if ctx.redis is not None
        else notify
    )
    await hub.start(wake)
    return hub


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings)
    # Only with an OTLP endpoint in OTEL_*; otherwise nothing is installed or patched.
    tracing = configure_tracing("shelfwise-api")
    # Built here, not in the lifespan, because the middleware stack needs it; it opens
    # no connection until first used.
    limiter = RateLimiter(settings.redis_url)
    policies = RatePolicies.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx_url = resolve_database_url(settings)
        ctx = build_context(settings, ctx_url, clock or SystemClock(), limiter)
        app.state.ctx = ctx
        await ctx.driver.open()
        ctx.hub = await start_hub(ctx, database_url=ctx_url)
        ctx.hub.listeners.append(ctx.catalog_cache.on_event)
        ctx.hub.listeners.append(ctx.admission.on_event)  # a restock clears "sold out"
        undrain = on_drain(ctx.hub.drain)
        # SIGTERM: streams are told to reconnect elsewhere, then uvicorn shuts down.
        unsignal = drain_on_signals()
        loop_watch = LoopWatch.from_settings(settings)  # lag metric, event_loop_blocked
        loop_watch.start()
        # What start-up built lives as long as the process: keep it out of the collector's
        # full passes. Each re-scanned those ~180,000 objects (~120 ms here); with
        # thousands of open streams a full pass already takes ~0.6 s and stalls the loop.
        thresholds = gc.get_threshold()
        gc.freeze()
        # And collect the young generation less often: with thousands of streams each
        # allocating per write, the default (700) triggered a full pass every ~2 s, each
        # stalling the loop for hundreds of ms (p99 1.2 s → 0.45 s at 5,000 subscribers).
        # Almost everything here is freed by reference counting; cycles just wait longer.
        gc.set_threshold(settings.gc_gen0_threshold, *thresholds[1:])
        role = "live" if settings.server_role is ServerRole.LIVE else "api"
        INSTANCE_INFO.labels(instance_id=settings.instance_name, role=role).set(1)
        log.info("started", env=settings.env.value, version=__version__)
        try:
            yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            unsignal()
            undrain()
            await loop_watch.stop()
            await ctx.hub.stop()
            await ctx.driver.close()
            await ctx.db.dispose()
            ctx.hasher.close()
            if ctx.redis is not None:
                await ctx.redis.aclose()
            await limiter.close()
            log.info("stopped")

    app = FastAPI(
        title="Shelfwise",
        version=__version__,
        summary="Real-time inventory and orders. Errors are RFC 9457 problem+json.",
        docs_url=None,  # http/docs.py: Swagger UI from a pinned package, not a CDN
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY,  # one server span per request (trace_http.py)
        middleware=[
            Middleware(StreamSendMiddleware),
            # No trusted proxy (the default): no layer, the peer's address is the client's.
            *(
                [Middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)]
                if settings.trusted_proxies
                else []
            ),
            # Request id, access log, metrics, error boundary, security headers: one layer,
            # in that order inside it (http/edge.py, decision 0002).
            Middleware(EdgeMiddleware, access_log=settings.access_log, hsts=settings.is_production),
            *([Middleware(RequestIdSpanMiddleware)] if tracing else []),
            # `serve --role api|live`: out-of-role paths get 421, logged and counted above.
            *(
                [Middleware(RoleGateMiddleware, role=settings.server_role)]
                if settings.server_role is not ServerRole.ALL
                else []
            ),
            # No allowed origins (the default): no CORS layer at all, nothing to answer.
            *(
                [
                    Middleware(
                        ProblemCORSMiddleware,
                        allow_origins=settings.cors_origins,
                        allow_credentials=True,
                        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                        allow_headers=CORS_ALLOW_HEADERS,
                        expose_headers=CORS_EXPOSE_HEADERS,
                        max_age=600,
                    )
                ]
                if settings.cors_origins
                else []
            ),
            Middleware(RequestTimeoutMiddleware, seconds=settings.request_timeout_seconds),
            # Rate limits off: no layer (it would pass every request through untouched).
            *(
                [
                    Middleware(
                        RateLimitMiddleware,
                        limiter=limiter,
                        anonymous=policies.anonymous,
                        max_concurrent=settings.max_concurrent_requests_per_client,
                        identify=bearer_subject(_token_issuer(settings)),  # per user, not NAT
                    )
                ]
                if settings.rate_limit_enabled
                else []
            ),
            Middleware(CompressionMiddleware, minimum_size=settings.gzip_min_bytes),
            Middleware(
                BodySizeLimitMiddleware,
                max_bytes=settings.max_body_bytes,
                exempt=is_streamed_upload,
            ),
        ],
    )
    live_role = settings.server_role is ServerRole.LIVE
    if live_role:
        # A live-role process serves nothing else (the role gate answers the rest 421):
        # its streams' routes come first, so a connect does not try every other route's
        # pattern before its own (~16 % of a connect's CPU; docs/performance.md).
        app.include_router(live_router)
        app.include_router(live_ws_router)
    # First otherwise: routing tries the routes in this order, one by one, on every
    # request, and the cached product read is the hottest path (7 routers ahead of it
    # cost ~30 µs of a ~250 µs hit; docs/performance.md, issue 14). Its paths overlap no
    # other router's, nor do the live routes (/v1/stream, /v1/ws, /v1/poll).
    app.include_router(catalog_router)
    # Second, for the same reason: placing an order is the hottest write. No other router
    # serves a path under /v1/orders, so no request can match differently.
    app.include_router(orders_router)
    install_problem_handlers(app)
    install_problem_docs(app)
    install_docs(app)
    app.include_router(ops_router)
    app.include_router(identity_router)
    app.include_router(users_router)
    app.include_router(inventory_router)
    app.include_router(jobs_router)
    app.include_router(jobs_admin_router)
    app.include_router(debug_router)
    if not live_role:
        app.include_router(live_router)
        app.include_router(live_ws_router)
    app.include_router(webhooks_router)
    app.include_router(images_router)
    app.include_router(imports_router)

    install_dashboard(app)  # `/` and `/static/`
    # Routes no earlier route can shadow (the order and the product read among them) are
    # found by one look-up, not by trying every route before them (decision 0045).
    install_route_table(app)
    return app
