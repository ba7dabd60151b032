"""Inbox retention: `prune_broker_inbox` deletes what no redelivery can need any more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from shelfwise.broker.inbox import prune_inbox
from shelfwise.context import AppContext
from shelfwise.jobs.registry import TASKS
from shelfwise.jobs.tasks import MAINTENANCE

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


async def test_inbox_rows_past_the_retention_are_pruned_in_chunks(ctx: AppContext) -> None:
    async with ctx.db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO broker_inbox (consumer, message_id, position, processed_at)"
                " SELECT CASE WHEN g % 2 = 0 THEN 'accounting' ELSE 'search' END, g::text, g,"
                " :now - make_interval(days => CASE WHEN g <= 25 THEN 8 ELSE 6 END)"
                " FROM generate_series(1, 40) AS g"
            ),
            {"now": NOW},
        )
    async with ctx.db.sessions() as session:
        pruned = await prune_inbox(session, older_than=NOW - timedelta(days=7), chunk=10)
    assert pruned == 25  # three chunks of at most 10, every consumer's rows
    async with ctx.db.engine.connect() as conn:
        left = (await conn.execute(text("SELECT position FROM broker_inbox ORDER BY 1"))).all()
    assert [row[0] for row in left] == list(range(26, 41))
    spec = TASKS["prune_broker_inbox"]
    assert (spec.queue, spec.cron, spec.singleton) == (MAINTENANCE, "47 * * * *", True)
