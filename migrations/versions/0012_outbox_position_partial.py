"""The outbox's unique `position` indexes only stamped rows.

Revision ID: 0012_outbox_position_partial
Revises: 0011_lines_ledger_level_key
Create Date: 2026-12-06

`uq_outbox_events_position` (a UNIQUE constraint) also held an entry for every row not
stamped yet: each event inserted (two per placed order) wrote a NULL key into it that no
query ever reads (unstamped rows are found through `ix_outbox_events_unpublished`, and
NULLs are never equal, so they were never constrained either), and the relay's stamp
left it behind as a dead entry. It is replaced by a unique index `WHERE position IS NOT
NULL`: the same uniqueness, and every reader (`max(position)`, `min(position)`,
`position > $1 ORDER BY position`) is planned on it as before (docs/decisions/0046).

Built CONCURRENTLY before the constraint is dropped (brief lock, `lock_timeout`), each
step committed on its own; a second run resumes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_outbox_position_partial"
down_revision: str | None = "0011_lines_ledger_level_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAMPED = "uq_outbox_events_stamped_position"
CONSTRAINT = "uq_outbox_events_position"
INVALID = sa.text(
    "SELECT 1 FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
    " WHERE c.relname = :name AND NOT i.indisvalid"
)


def _build_unique_index(name: str, definition: str) -> None:
    """CREATE UNIQUE INDEX CONCURRENTLY `name` ON `definition`, resuming a failed run. A
    concurrent build cut short (lock_timeout) leaves an invalid index behind that IF NOT
    EXISTS would keep: it is dropped and built again."""
    if op.get_bind().execute(INVALID, {"name": name}).first() is not None:
        op.execute(f"DROP INDEX CONCURRENTLY {name}")
    op.execute(f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {definition}")


def upgrade() -> None:
    with op.get_context().autocommit_block():
        _build_unique_index(STAMPED, "outbox_events (position) WHERE position IS NOT NULL")
        op.execute(f"ALTER TABLE outbox_events DROP CONSTRAINT IF EXISTS {CONSTRAINT}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        _build_unique_index(CONSTRAINT, "outbox_events (position)")
        op.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = '{CONSTRAINT}')"
            f" THEN ALTER TABLE outbox_events ADD CONSTRAINT {CONSTRAINT} UNIQUE USING INDEX"
            f" {CONSTRAINT}; END IF; END $$"
        )
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {STAMPED}")
