"""The outbox table. Rows are written in the business transaction and stamped by the relay."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Identity, Index, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shelfwise.db import Base


class OutboxEvent(Base):
    """One event. `id` is insertion order only; `position` is the published (commit) order.

    A sequence hands out ids when rows are inserted, not when their transactions commit,
    so id 10 can become visible after id 11. The relay stamps `position` on rows that are
    already committed, one batch at a time, which is why positions are commit order.
    """

    __tablename__ = "outbox_events"
    __table_args__ = (
        CheckConstraint("position > 0", name="position_positive"),
        Index("ix_outbox_events_unpublished", "id", postgresql_where=text("position IS NULL")),
        # Unique among stamped rows only: an unstamped row (NULL) has nothing to index, and
        # every reader of positions asks for stamped ones (docs/decisions/0046).
        Index(
            "uq_outbox_events_stamped_position",
            "position",
            unique=True,
            postgresql_where=text("position IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    position: Mapped[int | None] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(64))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    published_at: Mapped[datetime | None]
    # The W3C trace context the event was written in (NULL when tracing is off): readers
    # link their spans to it (`observability/tracing.py`).
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSONB(none_as_null=True))
