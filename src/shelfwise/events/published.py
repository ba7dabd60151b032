"""Reading the published stream on the psycopg driver, for readers on a hot loop.

The live hub reads every event back after each commit burst, in every API process:
through the ORM (a `read_stream` beside the outbox model, since removed) that was ~11 %
of an API process's CPU under order load (docs/performance.md, issue 14),
most of it building and then copying ORM objects. Here the rows come as tuples straight
into `PublishedEvent`, through a connection of the driver pool (`driverpool.py`;
docs/decisions/0037-live-hub-reads-on-the-driver-pool.md).
"""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from shelfwise.events.outbox import PublishedEvent

# Same columns and order as `PublishedEvent`'s fields; a position is only ever stamped
# on a committed row, by one relay, in increasing order (events/relay.py).
READ_PUBLISHED: LiteralString = """
SELECT position, id, type, aggregate_type, aggregate_id, payload, version,
       created_at, published_at, trace_context
  FROM outbox_events
 WHERE position > %s
 ORDER BY position
 LIMIT %s
"""
OLDEST_POSITION: LiteralString = "SELECT min(position) FROM outbox_events"
NEWEST_POSITION: LiteralString = "SELECT coalesce(max(position), 0) FROM outbox_events"


async def read_published(
    conn: AsyncConnection[Any], after_position: int, limit: int
) -> list[PublishedEvent]:
    """Published events after `after_position`, in position order (at most `limit`).

    Resuming with the last position seen never skips or repeats an event: positions are
    handed out only to committed rows, by one relay, in increasing order."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(READ_PUBLISHED, (after_position, limit))
    return [PublishedEvent(*row) for row in await cursor.fetchall()]


async def oldest_position(conn: AsyncConnection[Any]) -> int | None:
    """The lowest position still in the outbox (None when nothing is published)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(OLDEST_POSITION)
    row = await cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def newest_position(conn: AsyncConnection[Any]) -> int:
    """The highest published position (0 when nothing is published)."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(NEWEST_POSITION)
    row = await cursor.fetchone()
    return 0 if row is None else int(row[0])
