"""The outbox's event record and reading the published stream.

Use cases write events through the unit of work (`store/unit.py`: `unit.emit`, one
INSERT just before COMMIT), which refuses a type that is not an `EventType`
(`events/types.py`) and wakes the relay after its commit: the event exists if and only
if its change committed. This module holds what writers and readers share: `Event`
(what a writer emits) and `PublishedEvent` (a row the relay has stamped with its stream
position; `events/published.py` reads them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.events.models import OutboxEvent
from shelfwise.observability.tracing import inject_context

# The relay stamped positions (payload: the highest position now published).
STREAM_CHANNEL = "shelfwise_stream"


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any]
    version: int = 1
    # The trace this event was written in, captured where it is built (None when off).
    trace_context: dict[str, str] | None = field(default_factory=inject_context)


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    position: int
    id: int
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, Any] = field(repr=False)
    version: int
    created_at: datetime
    published_at: datetime | None
    trace_context: dict[str, str] | None = field(default=None, repr=False)


async def prune_published_events(session: AsyncSession, *, older_than: datetime) -> int:
    """Delete published events older than the retention, always keeping the newest one.

    The relay continues from `max(position)`: deleting the last row would restart the
    stream at 1 and break every reader's resume position.
    """
    newest = select(func.max(OutboxEvent.position)).scalar_subquery()
    async with session.begin():
        deleted = await session.execute(
            delete(OutboxEvent).where(
                OutboxEvent.published_at < older_than, OutboxEvent.position < newest
            )
        )
    return int(deleted.rowcount)  # type: ignore[attr-defined]
