"""The bugs the drills make happen, as admin routes of a served process (`shelfwise drill
NAME --url`): a blocked loop, connections held across slow work, a query without an index.

Mounted under `/v1/admin/debug/drill/` beside the debug endpoints (so also off when they
are), admin-only, limited by `rate_limit_debug` — and absent (404) in production even when
`debug_endpoints_enabled` is set there: they break the process on purpose. Each route is
bounded (seconds, rows) and leaves nothing behind (the table is a temporary one).
"""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.errors import NotFound
from shelfwise.http.deps import ContextDep
from shelfwise.http.ratelimit import Policy
from shelfwise.identity.dependencies import Admin, route_limit

MAX_HOLD_SECONDS = 65.0  # above the default 30 s leak threshold + the 5 s pool timeout
PRIVATE = {"Cache-Control": "private, no-store"}


async def _outside_production(ctx: ContextDep) -> None:
    if ctx.settings.is_production:
        raise NotFound("Drill routes exist only outside production")


@lru_cache(maxsize=8)
def _policy(spec: str) -> Policy:
    return Policy.parse("debug", spec)  # the debug endpoints' budget, shared


def _debug_limit(ctx: AppContext) -> Policy:
    return _policy(ctx.settings.rate_limit_debug)


router = APIRouter(
    prefix="/drill",
    dependencies=[Depends(_outside_production), Depends(route_limit(_debug_limit))],
    include_in_schema=False,
)


def drill_blocks_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # the bug on purpose: a synchronous call inside `async def`


@router.post("/block-loop")
async def block_loop(
    admin: Admin,
    seconds: Annotated[float, Query(gt=0, le=10)] = 0.5,
    fixed: bool = False,
) -> JSONResponse:
    """Sleep `seconds` on the event loop (every request of this process waits), or, with
    `fixed`, the same sleep in a worker thread (nothing else waits)."""
    if fixed:
        await asyncio.to_thread(time.sleep, seconds)
    else:
        drill_blocks_the_loop(seconds)
    return JSONResponse({"seconds": seconds, "fixed": fixed}, headers=PRIVATE)


async def hold_connection_across_slow_work(ctx: AppContext, seconds: float) -> None:
    """The bug on purpose: the session keeps its pooled connection during a remote call."""
    async with ctx.db.sessions() as session:
        await session.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)  # stands for a slow HTTP call


@router.post("/hold-connections")
async def hold_connections(
    admin: Admin,
    ctx: ContextDep,
    seconds: Annotated[float, Query(gt=0, le=MAX_HOLD_SECONDS)] = 1.0,
) -> JSONResponse:
    """Take every connection of the SQLAlchemy pool (size + overflow) and hold them for
    at least `seconds` — longer when this server's pool timeout or leak threshold needs
    it for its signals to trip (at most MAX_HOLD_SECONDS)."""
    settings = ctx.settings
    connections = settings.db_pool_size + settings.db_max_overflow
    hold = min(
        MAX_HOLD_SECONDS,
        max(
            seconds,
            settings.db_pool_timeout_seconds + 1.0,
            settings.db_connection_held_warn_seconds + 1.0,
        ),
    )
    results = await asyncio.gather(
        *(hold_connection_across_slow_work(ctx, hold) for _ in range(connections)),
        return_exceptions=True,
    )
    held = sum(1 for result in results if not isinstance(result, BaseException))
    body = {"connections": connections, "held": held, "seconds": hold}
    return JSONResponse(body, headers=PRIVATE)


SLOW_QUERY_SETUP = (
    "CREATE TEMPORARY TABLE drill_order_notes ON COMMIT DROP AS "
    "SELECT n AS id, md5(n::text) AS reference FROM generate_series(1, :rows) AS n",
    "ANALYZE drill_order_notes",
)
LOOKUP = "SELECT id FROM drill_order_notes WHERE reference = md5('42')"
CREATE_INDEX = "CREATE INDEX ON drill_order_notes (reference)"


@router.post("/slow-query")
async def slow_query(
    admin: Admin,
    ctx: ContextDep,
    rows: Annotated[int, Query(ge=1000, le=2_000_000)] = 200_000,
) -> JSONResponse:
    """Look one row up by an unindexed column of a `rows`-row temporary table (a
    sequential scan: the slow-statement log names it), then again after the index:
    both plans and timings come back. The table goes at the end of the transaction."""
    async with ctx.db.sessions() as session, session.begin():
        for statement in SLOW_QUERY_SETUP:
            await session.execute(text(statement), {"rows": rows})
        before = await _timed_plan(session)
        await session.execute(text(CREATE_INDEX))
        await session.execute(text("ANALYZE drill_order_notes"))
        after = await _timed_plan(session)
    body = {
        "rows": rows,
        "lookup": LOOKUP,
        "without_index": before,
        "with_index": after,
        "slow_statement_ms": ctx.settings.db_slow_statement_ms,  # this server's threshold
    }
    return JSONResponse(body, headers=PRIVATE)


async def _timed_plan(session: Any) -> dict[str, Any]:
    started = time.perf_counter()
    await session.execute(text(LOOKUP))
    elapsed_ms = (time.perf_counter() - started) * 1000
    plan = (await session.execute(text("EXPLAIN " + LOOKUP))).scalars().all()
    return {"ms": round(elapsed_ms, 2), "plan": list(plan)}
