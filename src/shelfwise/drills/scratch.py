"""The drills' own small table of stock bins, created and dropped around each lock drill."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shelfwise.drills.system import DrillSystem


@asynccontextmanager
async def bins(system: DrillSystem, count: int = 2, on_hand: int = 10) -> AsyncIterator[None]:
    async with await system.connect() as conn:
        await conn.execute("DROP TABLE IF EXISTS drill_bins")
        await conn.execute(
            "CREATE TABLE drill_bins (id int PRIMARY KEY, on_hand int NOT NULL, "
            "version int NOT NULL DEFAULT 1)"
        )
        await conn.execute(
            "INSERT INTO drill_bins (id, on_hand) SELECT g, %s FROM generate_series(1, %s) g",
            (on_hand, count),
        )
        try:
            yield
        finally:
            await conn.execute("DROP TABLE IF EXISTS drill_bins")
