"""The inbox's SQL: the claims (`consumer.py`), and retention — the rows that deduplicate
redeliveries are needed only as long as a redelivery can happen.

A message can come back while it sits unacknowledged in a queue or in `<queue>.dead`,
or when the publisher re-sends what it had in flight — which it only does from the
outbox, so nothing older than the outbox retention can arrive twice. Rows older than
`broker_inbox_retention_days` (7, like the outbox) are deleted hourly by the
`prune_broker_inbox` job, in chunks, so a large backlog never holds one long delete.
A dead letter replayed after the retention is processed again: replay sooner, or keep
the inbox longer.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

CLAIM_SQL = text(
    "INSERT INTO broker_inbox (consumer, message_id, position, event_type)"
    " VALUES (:consumer, :message_id, :position, :event_type)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)
# The batch's claims in one statement; a message id twice in the arrays (two copies in
# one batch) inserts once and is returned once.
CLAIM_BATCH_SQL = text(
    "INSERT INTO broker_inbox (consumer, message_id, position, event_type)"
    " SELECT :consumer, m.message_id, m.position, m.event_type"
    "   FROM unnest(CAST(:message_ids AS text[]), CAST(:positions AS bigint[]),"
    "               CAST(:event_types AS text[])) AS m(message_id, position, event_type)"
    " ON CONFLICT DO NOTHING RETURNING message_id"
)
PRUNE_SQL = text(
    "DELETE FROM broker_inbox WHERE ctid = ANY(ARRAY("
    " SELECT ctid FROM broker_inbox WHERE processed_at < :cutoff LIMIT :chunk))"
)


async def prune_inbox(session: AsyncSession, *, older_than: datetime, chunk: int = 10_000) -> int:
    """Delete every consumer's inbox rows processed before `older_than`; one transaction
    per chunk (uses ix_broker_inbox_processed_at). Returns the count."""
    pruned = 0
    while True:
        async with session.begin():
            result = await session.execute(PRUNE_SQL, {"cutoff": older_than, "chunk": chunk})
        deleted = int(result.rowcount)  # type: ignore[attr-defined]
        pruned += deleted
        if deleted < chunk:
            return pruned
