"""`updated_at` is never earlier than `created_at`.

Revision ID: 0010_updated_after_created
Revises: 0009_broker
Create Date: 2026-12-06

Products and orders took `created_at` from `clock_timestamp()` (the moment of the insert,
so rows inserted by one transaction keep their order) but `updated_at` from `now()` (the
transaction's start). Every row inserted after the first moment of its transaction —
each seeded product, each imported one — showed an `updated_at` before its
`created_at`. Both now come from `clock_timestamp()`, evaluated in column order, and
the rows already written are repaired.

A default change is a catalog-only `ALTER` (no rewrite); the repair touches only the
rows that are wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_updated_after_created"
down_revision: str | None = "0009_broker"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("products", "orders")


def upgrade() -> None:
    for table in TABLES:
        op.alter_column(table, "updated_at", server_default=sa.text("clock_timestamp()"))
        op.execute(
            f"UPDATE {table} SET updated_at = created_at "  # noqa: S608 fixed table names
            "WHERE updated_at < created_at"
        )


def downgrade() -> None:
    for table in TABLES:
        op.alter_column(table, "updated_at", server_default=sa.text("now()"))
