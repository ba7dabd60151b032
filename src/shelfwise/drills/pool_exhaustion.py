"""pool-exhaustion: a code path holds its pooled connection across slow work elsewhere."""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from structlog.testing import capture_logs

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.system import DrillSystem, open_system


async def reserve_then_call_payment_provider(system: DrillSystem, provider_seconds: float) -> None:
    """The bug: the session (and its connection) stays checked out during the remote call."""
    async with system.ctx.db.sessions() as session:
        await session.execute(text("SELECT 1"))
        await asyncio.sleep(provider_seconds)  # stands for a slow HTTP call


async def run(system: DrillSystem, quick: bool) -> Outcome:
    # A second app on the same database with a pool of two, so a few callers exhaust it.
    tiny = system.ctx.settings.model_copy(
        update={"db_pool_size": 2, "db_max_overflow": 0, "db_pool_timeout_seconds": 0.3}
    )
    hold = 1.0 if quick else 5.0
    timeouts = metric("shelfwise_db_pool_timeouts_total", pool="sqlalchemy")
    leaks = metric("shelfwise_db_connections_held_too_long_total", pool="sqlalchemy")
    async with open_system(tiny) as small:
        with capture_logs() as logs:
            holders = [
                asyncio.create_task(reserve_then_call_payment_provider(small, hold))
                for _ in range(2)
            ]
            await asyncio.sleep(0.1)  # both holders have their connection
            waiters = metric("shelfwise_db_pool_waiters", pool="sqlalchemy")
            async with small.client() as client:
                answers = await asyncio.gather(
                    *(client.get("/readyz") for _ in range(3)),
                    *(client.get("/v1/products?limit=1") for _ in range(3)),
                )
            await asyncio.gather(*holders)
    held = [e for e in logs if e["event"] == "db_connection_held_too_long"]
    statuses = sorted(answer.status_code for answer in answers)
    timed_out = metric("shelfwise_db_pool_timeouts_total", pool="sqlalchemy") - timeouts
    leaked = metric("shelfwise_db_connections_held_too_long_total", pool="sqlalchemy") - leaks
    return Outcome(
        signal="shelfwise_db_pool_timeouts_total",
        seen=timed_out >= 1
        and 503 in statuses
        and leaked >= 1
        and any("reserve_then_call_payment_provider" in e["taken_by"] for e in held),
        evidence={
            "HTTP statuses while the pool is held": statuses,
            "shelfwise_db_pool_waiters (sampled)": waiters,
            "shelfwise_db_pool_timeouts_total (delta)": timed_out,
            "shelfwise_db_connections_held_too_long_total (delta)": leaked,
            "db_connection_held_too_long.taken_by": held[0]["taken_by"] if held else None,
        },
        look_at=[
            "gauges shelfwise_db_pool_connections{state} and shelfwise_db_pool_waiters",
            "histogram shelfwise_db_pool_wait_seconds, counter shelfwise_db_pool_timeouts_total",
            "503 database_busy problems with Retry-After, log database_pool_exhausted",
            "log db_connection_held_too_long: `taken_by` and `stack` name the holder",
        ],
        fix="never hold a session across a remote call: finish the transaction, call out, "
        "then open a new one (or defer the call to a job)",
    )


DRILL = Drill("pool-exhaustion", "a connection held across slow work starves the pool", run)
