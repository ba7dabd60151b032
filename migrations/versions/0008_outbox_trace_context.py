"""The trace context an outbox event was written in (W3C `traceparent`/`tracestate`).

Revision ID: 0008_outbox_trace_context
Revises: 0007_webhook_secret_rotation
Create Date: 2026-12-06

A nullable column without a default: a catalog-only change, no table rewrite, and the
short `lock_timeout` set in env.py bounds the wait for the ACCESS EXCLUSIVE lock. NULL
when tracing is off or the writer had no span (`observability/tracing.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_outbox_trace_context"
down_revision: str | None = "0007_webhook_secret_rotation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_events", sa.Column("trace_context", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_events", "trace_context")
