"""The outbox's unique position covers stamped rows only (migration 0012, decision 0046).

Unstamped rows (position NULL) have no entry in it; two stamped rows still cannot share
a position, and the relay's and readers' position look-ups are planned on it."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shelfwise.context import AppContext

EVENT = (
    "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, position)"
    " VALUES ('test.event', 'test', 'x', '{}', :position)"
)


async def test_two_stamped_rows_cannot_share_a_position(ctx: AppContext) -> None:
    async with ctx.db.engine.begin() as conn:
        for _ in range(3):  # unstamped rows: nothing to be unique about
            await conn.execute(text(EVENT), {"position": None})
        await conn.execute(text(EVENT), {"position": 7})
    with pytest.raises(IntegrityError, match="uq_outbox_events_stamped_position"):
        async with ctx.db.engine.begin() as conn:
            await conn.execute(text(EVENT), {"position": 7})


@pytest.mark.parametrize(
    "query",
    [
        "SELECT coalesce(max(position), 0) FROM outbox_events",
        "SELECT min(position) FROM outbox_events",
        "SELECT id FROM outbox_events WHERE position > 5 ORDER BY position LIMIT 10",
    ],
)
async def test_position_readers_use_the_index(ctx: AppContext, query: str) -> None:
    async with ctx.db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(row[0] for row in await conn.execute(text("EXPLAIN " + query)))
    assert "uq_outbox_events_stamped_position" in plan, plan
