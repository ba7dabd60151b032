"""Ledger hardening: filter-by-kind index, and TRUNCATE refused like UPDATE/DELETE.

Revision ID: 0005_ledger_hardening
Revises: 0004_outbox_jobs
Create Date: 2026-11-21

The index is built CONCURRENTLY (no write lock on a growing, append-only table).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005_ledger_hardening"
down_revision: str | None = "0004_outbox_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A statement-level trigger: the row-level one never fires for TRUNCATE.
    op.execute("""
        CREATE TRIGGER stock_movements_no_truncate
        BEFORE TRUNCATE ON stock_movements
        FOR EACH STATEMENT EXECUTE FUNCTION stock_movements_append_only()
    """)
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_stock_movements_kind_id",
            "stock_movements",
            ["kind", "id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_stock_movements_kind_id",
            table_name="stock_movements",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.execute("DROP TRIGGER IF EXISTS stock_movements_no_truncate ON stock_movements")
