"""Operational endpoints: liveness, readiness, metrics. Not part of the public API schema."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import text

from shelfwise.broker.status import broker_status
from shelfwise.http.deps import ContextDep
from shelfwise.jobs.observe import refresh_queue_gauges
from shelfwise.migrate import current_revisions, schema_status
from shelfwise.observability.activity import refresh_database_gauges
from shelfwise.observability.metrics import DB_POOL_CHECKED_OUT
from shelfwise.shared_state import REDIS_DOWN

router = APIRouter(include_in_schema=False)
# Reported in /readyz but never a reason to leave the load balancer: the instance still
# serves without them (degraded Redis; a broker outage only delays the event bus).
REPORTED_ONLY = frozenset({"redis", "broker"})


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up and its event loop answers. Deliberately checks nothing else, so
    a database outage does not make Kubernetes restart every healthy pod."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


@router.get("/readyz")
async def readyz(ctx: ContextDep) -> JSONResponse:
    """Ready for traffic: the database answers and the schema is at the migrations' head.

    Redis is reported but does not decide: without it an instance still serves (degraded,
    `shared_state.py`), and failing every instance's readiness at once would turn a Redis
    outage into a full one at the load balancer."""
    checks: dict[str, str] = {}
    try:
        async with ctx.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            current = await current_revisions(conn)
        checks["database"] = "ok"
        checks["migrations"] = schema_status(current)  # ahead is fine: migrate.py
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if ctx.redis is not None:
        checks["redis"] = await _redis_check(ctx.redis)
    if ctx.settings.broker_url:  # reported, never deciding: events wait in the outbox
        checks["broker"] = await broker_status(ctx.db.engine, ctx.settings.broker_exchange)
    ready = all(value == "ok" for name, value in checks.items() if name not in REPORTED_ONLY)
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


async def _redis_check(redis: Redis) -> str:
    try:
        await asyncio.wait_for(redis.ping(), timeout=1.0)
    except (TimeoutError, *REDIS_DOWN) as exc:
        return (
            f"degraded: unreachable ({type(exc).__name__}); rate limits per instance, "
            "live fan-out via NOTIFY, browser sessions refused"
        )
    return "ok"


@router.get("/metrics")
async def metrics(request: Request, ctx: ContextDep) -> Response:
    checked_out = getattr(ctx.db.engine.pool, "checkedout", None)
    if callable(checked_out):
        DB_POOL_CHECKED_OUT.set(checked_out())
    try:
        async with ctx.db.sessions() as session:
            await refresh_queue_gauges(session)
            await refresh_database_gauges(
                session, long_after_seconds=ctx.settings.db_long_transaction_seconds
            )
    except Exception:  # noqa: S110 (a scrape still answers with the process's own metrics)
        pass
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
