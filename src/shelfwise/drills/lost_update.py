"""lost-update: two read-modify-writes of one row, the second overwrites the first."""

from __future__ import annotations

import asyncio
from typing import Any

from shelfwise.drills.base import Drill, Outcome
from shelfwise.drills.scratch import bins
from shelfwise.drills.system import DrillSystem

READ = "SELECT on_hand, version FROM drill_bins WHERE id = 1"


async def _receive_blind(conn: Any, units: int, both_read: asyncio.Barrier) -> None:
    """The bug: read, compute in Python, write back whatever was computed."""
    on_hand, _ = await (await conn.execute(READ)).fetchone()
    await both_read.wait()
    await conn.execute("UPDATE drill_bins SET on_hand = %s WHERE id = 1", (on_hand + units,))


async def _receive_conditional(conn: Any, units: int, both_read: asyncio.Barrier) -> int:
    """The fix: write only if the version read is still current (what If-Match does over
    HTTP: 412 when stale); on a miss, read again and retry. Returns the conflicts seen."""
    conflicts, first = 0, True
    while True:
        on_hand, version = await (await conn.execute(READ)).fetchone()
        if first:
            first = False
            await both_read.wait()
        cur = await conn.execute(
            "UPDATE drill_bins SET on_hand = %s, version = version + 1 "
            "WHERE id = 1 AND version = %s",
            (on_hand + units, version),
        )
        if cur.rowcount == 1:
            return conflicts
        conflicts += 1


async def _final(conn: Any) -> int:
    row = await (await conn.execute(READ)).fetchone()
    return int(row[0])


async def run(system: DrillSystem, quick: bool) -> Outcome:
    async with (
        bins(system, count=1, on_hand=10),
        await system.connect() as a,
        await system.connect() as b,
    ):
        barrier = asyncio.Barrier(2)
        await asyncio.gather(_receive_blind(a, 5, barrier), _receive_blind(b, 3, barrier))
        blind = await _final(a)
        await a.execute("UPDATE drill_bins SET on_hand = 10, version = 1 WHERE id = 1")
        barrier = asyncio.Barrier(2)
        conflicts = await asyncio.gather(
            _receive_conditional(a, 5, barrier), _receive_conditional(b, 3, barrier)
        )
        conditional = await _final(a)
    return Outcome(
        signal="the anomaly: on_hand after +5 and +3 on 10",
        seen=blind != 18 and conditional == 18 and sum(conflicts) == 1,
        evidence={
            "read-modify-write, no lock or version": blind,
            "conditional UPDATE ... WHERE version = :read": conditional,
            "stale writes refused and retried": sum(conflicts),
        },
        look_at=[
            "ledger drift: `shelfwise reconcile`, gauge shelfwise_ledger_drift_levels",
            "412 precondition_failed answers (If-Match) in shelfwise_http_requests_total",
            "an anomaly test: two sessions interleaved at the read",
        ],
        fix="update in SQL (SET on_hand = on_hand + :n), or a version checked by the UPDATE "
        "(If-Match → 412 on a stale ETag), or SELECT ... FOR UPDATE before computing",
    )


DRILL = Drill("lost-update", "read-modify-write without a lock or version loses a write", run)
