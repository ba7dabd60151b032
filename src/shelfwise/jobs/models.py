"""Tables of the job layer: our `job_progress`, and a read-only view of Procrastinate's jobs.

Procrastinate owns `procrastinate_jobs` (its schema is applied by migration 0004); it is
described here on a separate `MetaData` so Alembic never thinks Shelfwise manages it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shelfwise.db import Base


class JobStatus(StrEnum):
    TODO = "todo"
    DOING = "doing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries exhausted: the dead-letter state
    CANCELLED = "cancelled"
    ABORTING = "aborting"
    ABORTED = "aborted"


job_status_type = ENUM(
    *[s.value for s in JobStatus], name="procrastinate_job_status", create_type=False
)

procrastinate_metadata = MetaData()
procrastinate_jobs = Table(
    "procrastinate_jobs",
    procrastinate_metadata,
    Column("id", BigInteger, primary_key=True),
    Column("queue_name", String(128), nullable=False),
    Column("task_name", String(128), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("lock", Text),
    Column("queueing_lock", Text),
    Column("args", JSONB, nullable=False),
    Column("status", job_status_type, nullable=False),
    Column("scheduled_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False),
    Column("abort_requested", Boolean, nullable=False),
    Column("worker_id", BigInteger),
)
procrastinate_events = Table(
    "procrastinate_events",
    procrastinate_metadata,
    Column("id", BigInteger, primary_key=True),
    Column("job_id", BigInteger, nullable=False),
    Column("type", String),
    Column("at", DateTime(timezone=True)),
)


class JobProgress(Base):
    """How far a long job got, and why it last failed. One row per job that reported.

    `job_id` references `procrastinate_jobs(id) ON DELETE CASCADE` (declared in the
    migration only, because that table is not on our metadata).
    """

    __tablename__ = "job_progress"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    done: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    total: Mapped[int | None] = mapped_column(BigInteger)
    message: Mapped[str] = mapped_column(Text, server_default="")
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
