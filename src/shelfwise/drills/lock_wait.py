"""lock-wait: a transaction holds a row lock; the next writer of that row waits on it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.scratch import bins
from shelfwise.drills.system import DrillSystem
from shelfwise.observability.activity import refresh_database_gauges

# What the drill prints, and what an operator runs: who waits, and on whom.
WAITING_SQL = """
SELECT pid, pg_blocking_pids(pid) AS blocked_by, wait_event_type, wait_event,
       left(query, 60) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND cardinality(pg_blocking_pids(pid)) > 0
"""
UNGRANTED_SQL = "SELECT count(*) FROM pg_locks WHERE NOT granted"


async def _waiting(observer: Any, deadline: float) -> list[tuple[Any, ...]]:
    """The waiters, once one of them shows it waits on a lock. A backend is in the lock
    table (so `pg_blocking_pids` names its blocker) a moment before it reports the wait
    (its row still says `Client`/`ClientRead` then): a first sample can catch that."""
    rows: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        rows = await (await observer.execute(WAITING_SQL)).fetchall()
        if any(row[2] == "Lock" for row in rows):
            return rows
        await asyncio.sleep(0.02)
    return rows


async def run(system: DrillSystem, quick: bool) -> Outcome:
    hold = 0.8 if quick else 5.0
    long_after = system.ctx.settings.db_long_transaction_seconds
    async with (
        bins(system),
        await system.connect() as holder,
        await system.connect() as writer,
        await system.connect() as observer,
    ):
        async with holder.transaction():
            await holder.execute("UPDATE drill_bins SET on_hand = on_hand - 1 WHERE id = 1")
            started = time.monotonic()
            second = asyncio.create_task(
                writer.execute("UPDATE drill_bins SET on_hand = on_hand - 1 WHERE id = 1")
            )
            waiting = await _waiting(observer, time.monotonic() + 5)
            ungranted = (await (await observer.execute(UNGRANTED_SQL)).fetchone() or (0,))[0]
            await asyncio.sleep(max(0.0, hold - (time.monotonic() - started)))
            async with system.ctx.db.sessions() as session:
                await refresh_database_gauges(session, long_after_seconds=long_after)
            long_transactions = metric("shelfwise_db_long_transactions")
        await second  # the holder committed: the writer goes on
        waited = time.monotonic() - started
    return Outcome(
        signal="pg_stat_activity wait_event_type=Lock",
        seen=any(row[2] == "Lock" for row in waiting) and long_transactions >= 1,
        evidence={
            "pg_stat_activity (pid, blocked_by, wait_event_type, wait_event, query)": waiting,
            "pg_locks not granted": ungranted,
            "shelfwise_db_long_transactions": long_transactions,
            "the second writer waited (s)": round(waited, 2),
        },
        look_at=[
            "gauges shelfwise_db_long_transactions, shelfwise_db_oldest_transaction_age_seconds",
            f"the query above: {' '.join(WAITING_SQL.split())}",
            "request latency (shelfwise_http_request_duration_seconds) with low CPU",
        ],
        fix="keep transactions short (no remote calls or user think time inside), take row "
        "locks late, and bound the wait with lock_timeout so a stuck holder fails fast",
    )


DRILL = Drill("lock-wait", "a second writer waits on a row lock another transaction holds", run)
