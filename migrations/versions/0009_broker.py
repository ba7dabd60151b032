"""The event bus: the broker publisher's confirmed position, and consumers' inbox.

Revision ID: 0009_broker
Revises: 0008_outbox_trace_context
Create Date: 2026-12-06

- `broker_publisher_positions`: one row per exchange; `position` is the last stream
  position the broker confirmed, moved only by the active publisher after the confirms
  (docs/events.md, "The event bus"). `connected`, `last_error` and `status_at` are what
  `/readyz` reports about it.
- `broker_inbox`: one row per (consumer, message_id) processed, written in the consumer's
  own transaction, so a redelivered message is recognised and acknowledged without being
  processed again.

Two new tables: no lock on anything that exists.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_broker"
down_revision: str | None = "0008_outbox_trace_context"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broker_publisher_positions",
        sa.Column("exchange", sa.String(length=255), nullable=False),
        sa.Column("position", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("connected", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "status_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "position >= 0", name=op.f("ck_broker_publisher_positions_position_not_negative")
        ),
        sa.PrimaryKeyConstraint("exchange", name=op.f("pk_broker_publisher_positions")),
    )
    op.create_table(
        "broker_inbox",
        sa.Column("consumer", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=128), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=True),
        sa.Column("event_type", sa.String(length=64), nullable=True),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "message_id", name=op.f("pk_broker_inbox")),
    )
    # Retention deletes by age.
    op.create_index("ix_broker_inbox_processed_at", "broker_inbox", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_broker_inbox_processed_at", table_name="broker_inbox")
    op.drop_table("broker_inbox")
    op.drop_table("broker_publisher_positions")
