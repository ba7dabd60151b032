"""Order lines and ledger rows reference their level by (id, product_id, location_id).

Revision ID: 0011_lines_ledger_level_key
Revises: 0010_updated_after_created
Create Date: 2026-12-06

Each `order_lines` and `stock_movements` row carried three foreign keys for what is one
fact, "this row is about that level": `stock_level_id` to `stock_levels`, `product_id`
to `products`, `location_id` to `locations`. Each is a trigger and a row lock
(`FOR KEY SHARE`) at every insert: six checks per one-line order, four of them on
`products` and `locations` rows every concurrent order shares (docs/decisions/0046).
They become one composite key each, to `stock_levels (id, product_id, location_id)`:
stricter (a line or a ledger row can no longer name a product or a location other than
its level's) and implying the two it replaces (a level references its product and its
location, and cannot be deleted while lines or ledger rows reference it).

Written the safe way, each step committed on its own (the tables may be large and the
order path writes them all the time):
1. the unique index the composite keys need, built CONCURRENTLY;
2. per table, one statement that swaps the single-column level key for the composite
   one, added NOT VALID (brief locks, no scan; the name stays, it follows the naming
   convention);
3. VALIDATE (a scan under SHARE UPDATE EXCLUSIVE: writes go on);
4. only then the product and location keys are dropped (brief locks, no scan).
A step that failed leaves the schema consistent, and running the migration again
resumes (IF EXISTS / IF NOT EXISTS, and the swap is repeatable).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_lines_ledger_level_key"
down_revision: str | None = "0010_updated_after_created"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEVEL_KEY = "uq_stock_levels_id_product_id_location_id"
TABLES = ("order_lines", "stock_movements")


INVALID_LEVEL_KEY = sa.text(
    "SELECT 1 FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid"
    " WHERE c.relname = :name AND NOT i.indisvalid"
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A concurrent build cut short (lock_timeout) leaves an invalid index behind that
        # IF NOT EXISTS would keep: build it again.
        if op.get_bind().execute(INVALID_LEVEL_KEY, {"name": LEVEL_KEY}).first() is not None:
            op.execute(f"DROP INDEX CONCURRENTLY {LEVEL_KEY}")
        op.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {LEVEL_KEY}"
            " ON stock_levels (id, product_id, location_id)"
        )
        for table in TABLES:
            level_fk = f"fk_{table}_stock_level_id_stock_levels"
            op.execute(
                f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {level_fk},"
                f" ADD CONSTRAINT {level_fk}"
                " FOREIGN KEY (stock_level_id, product_id, location_id)"
                " REFERENCES stock_levels (id, product_id, location_id)"
                " ON DELETE RESTRICT NOT VALID"
            )
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {level_fk}")
            op.execute(
                f"ALTER TABLE {table}"
                f" DROP CONSTRAINT IF EXISTS fk_{table}_product_id_products,"
                f" DROP CONSTRAINT IF EXISTS fk_{table}_location_id_locations"
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for table in TABLES:
            level_fk = f"fk_{table}_stock_level_id_stock_levels"
            for column, referred in (("product_id", "products"), ("location_id", "locations")):
                name = f"fk_{table}_{column}_{referred}"
                op.execute(
                    f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name},"
                    f" ADD CONSTRAINT {name} FOREIGN KEY ({column})"
                    f" REFERENCES {referred} (id) ON DELETE RESTRICT NOT VALID"
                )
                op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")
            op.execute(
                f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {level_fk},"
                f" ADD CONSTRAINT {level_fk} FOREIGN KEY (stock_level_id)"
                " REFERENCES stock_levels (id) ON DELETE RESTRICT NOT VALID"
            )
            op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {level_fk}")
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {LEVEL_KEY}")
