"""Transactional outbox, Procrastinate's job schema, and job progress.

Revision ID: 0004_outbox_jobs
Revises: 0003_auth_sessions
Create Date: 2026-11-22

- `outbox_events`: written in the business transaction; `position` stays NULL until the
  single relay stamps it after commit (docs/decisions/0011-outbox-relay-ordering.md).
- Procrastinate's schema is applied from a copy frozen next to the migrations
  (`migrations/sql/procrastinate-3.10.0-schema.sql`), not from the installed package: a
  migration must produce the same schema forever. Upgrading Procrastinate later means a new
  revision that applies the library's own `sql/migrations/*.sql` files for the versions in
  between (see docs/jobs.md).
- `job_progress`: progress and the last error of a job, readable at `GET /v1/jobs/{id}`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_outbox_jobs"
down_revision: str | None = "0003_auth_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCRASTINATE_SCHEMA = (
    Path(__file__).resolve().parents[1] / "sql" / "procrastinate-3.10.0-schema.sql"
)


def upgrade() -> None:
    op.create_table(
        "outbox_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("aggregate_type", sa.String(length=32), nullable=False),
        sa.Column("aggregate_id", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("version", sa.SmallInteger(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("position > 0", name=op.f("ck_outbox_events_position_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("position", name=op.f("uq_outbox_events_position")),
    )
    # The relay's work list: small, because rows leave it as soon as they are stamped.
    op.create_index(
        "ix_outbox_events_unpublished",
        "outbox_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("position IS NULL"),
    )

    # Procrastinate's SQL holds `%` and `:` that SQLAlchemy or psycopg would read as
    # placeholders, and several statements: send it to the driver verbatim.
    op.get_bind().exec_driver_sql(
        PROCRASTINATE_SCHEMA.read_text(encoding="utf-8"),
        execution_options={"no_parameters": True},
    )

    op.create_table(
        "job_progress",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("done", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["procrastinate_jobs.id"],
            name=op.f("fk_job_progress_job_id_procrastinate_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_progress")),
    )


def downgrade() -> None:
    op.drop_table("job_progress")
    op.execute(
        """
        DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
            procrastinate_jobs, procrastinate_workers CASCADE;
        DROP TYPE IF EXISTS procrastinate_job_to_defer_v1, procrastinate_job_event_type,
            procrastinate_job_status CASCADE;
        """
    )
    op.execute(
        """
        DO $$
        DECLARE f record;
        BEGIN
            FOR f IN SELECT oid::regprocedure AS sig FROM pg_proc
                     WHERE proname LIKE 'procrastinate\\_%' LOOP
                EXECUTE 'DROP FUNCTION IF EXISTS ' || f.sig || ' CASCADE';
            END LOOP;
        END $$;
        """
    )
    op.drop_index(
        "ix_outbox_events_unpublished",
        table_name="outbox_events",
        postgresql_where=sa.text("position IS NULL"),
    )
    op.drop_table("outbox_events")
