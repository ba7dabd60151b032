"""slow-query: a lookup on a column without an index scans the whole table."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text
from structlog.testing import capture_logs

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.system import DrillSystem, open_system

LOOKUP = "SELECT id FROM drill_shipments WHERE tracking_code = :code"
EXPLAIN = "EXPLAIN SELECT id FROM drill_shipments WHERE tracking_code = %s"


async def _lookup(system: DrillSystem, code: str) -> float:
    """The statement as a request would run it, through the app's SQLAlchemy pool."""
    started = time.perf_counter()
    async with system.ctx.db.sessions() as session:
        await session.execute(text(LOOKUP), {"code": code})
    return (time.perf_counter() - started) * 1000


async def _plan(conn: Any, code: str) -> str:
    cur = await conn.execute(EXPLAIN, (code,))
    return "\n".join(row[0] for row in await cur.fetchall())


def _scan_line(plan: str) -> str:
    """The plan's scan node (a parallel plan puts `Gather` above it)."""
    return next((line.strip() for line in plan.splitlines() if "Scan" in line), plan)


async def run(system: DrillSystem, quick: bool) -> Outcome:
    rows = 200_000 if quick else 3_000_000
    code = "not-a-tracking-code"  # a miss reads every row: the worst case
    async with await system.connect() as conn:
        await conn.execute("DROP TABLE IF EXISTS drill_shipments")
        await conn.execute(
            "CREATE TABLE drill_shipments (id bigint PRIMARY KEY, tracking_code text NOT NULL)"
        )
        try:
            await conn.execute(
                "INSERT INTO drill_shipments SELECT g, md5(g::text) FROM generate_series(1, %s) g",
                (rows,),
            )
            await conn.execute("ANALYZE drill_shipments")
            # A fast machine scans this table in tens of ms: a 5 ms threshold keeps the
            # drill honest there, and an index lookup (well under 1 ms) stays below it.
            strict = system.ctx.settings.model_copy(update={"db_slow_statement_ms": 5.0})
            async with open_system(strict) as app:
                before = metric("shelfwise_db_slow_statements_total", pool="sqlalchemy")
                with capture_logs() as logs:
                    scan_ms = await _lookup(app, code)
                plan_before = await _plan(conn, code)
                # CONCURRENTLY: writes go on while the index builds (no long lock).
                await conn.execute(
                    "CREATE INDEX CONCURRENTLY drill_shipments_tracking_code_idx "
                    "ON drill_shipments (tracking_code)"
                )
                plan_after = await _plan(conn, code)
                index_ms = await _lookup(app, code)
        finally:
            await conn.execute("DROP TABLE IF EXISTS drill_shipments")
    slow = [e for e in logs if e["event"] == "db_slow_statement"]
    moved = metric("shelfwise_db_slow_statements_total", pool="sqlalchemy") - before
    return Outcome(
        signal="db_slow_statement",
        seen=bool(slow) and moved >= 1 and "Seq Scan" in plan_before and "Index" in plan_after,
        evidence={
            "db_slow_statement.statement": slow[0]["statement"] if slow else None,
            "db_slow_statement.duration_ms": slow[0]["duration_ms"] if slow else None,
            "shelfwise_db_slow_statements_total{pool=sqlalchemy} (delta)": moved,
            "EXPLAIN before": _scan_line(plan_before),
            "EXPLAIN after CREATE INDEX CONCURRENTLY": _scan_line(plan_after),
            "lookup before / after (ms)": f"{scan_ms:.1f} / {index_ms:.1f}",
        },
        look_at=[
            "log db_slow_statement (normalized SQL, request_id, trace_id; never parameters)",
            "counter shelfwise_db_slow_statements_total, "
            "histogram shelfwise_db_statement_duration_seconds",
            "`shelfwise db top` (pg_stat_statements: calls, mean, total, rows)",
            "EXPLAIN (ANALYZE, BUFFERS) of the statement: `Seq Scan` with a `Filter`",
        ],
        fix="an index on the filtered column, built with CREATE INDEX CONCURRENTLY in its own "
        "migration (no transaction), then check the plan again",
    )


DRILL = Drill("slow-query", "a lookup on an unindexed column scans the table", run)
