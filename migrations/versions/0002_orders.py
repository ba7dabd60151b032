"""Orders and order lines; ledger rows point at their order.

Revision ID: 0002_orders
Revises: 0001_initial
Create Date: 2026-11-21

`stock_movements` may already be large on a live database, so its change is written the
safe way: a nullable column without default (catalog-only change), an index built
CONCURRENTLY (no write lock), and the foreign key added NOT VALID, then validated in a
separate step that only takes a SHARE UPDATE EXCLUSIVE lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_orders"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("placed_by_user_id", sa.Uuid(), nullable=True),
        sa.Column("placed_by_api_key_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('reserved','confirmed','fulfilled','cancelled','expired')",
            name=op.f("ck_orders_status_known"),
        ),
        sa.CheckConstraint(
            "(placed_by_user_id IS NULL) <> (placed_by_api_key_id IS NULL)",
            name=op.f("ck_orders_one_placer"),
        ),
        sa.CheckConstraint("total_minor >= 0", name=op.f("ck_orders_total_non_negative")),
        sa.ForeignKeyConstraint(
            ["placed_by_api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_orders_placed_by_api_key_id_api_keys"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["placed_by_user_id"],
            ["users.id"],
            name=op.f("fk_orders_placed_by_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    op.create_index("ix_orders_created_at_id", "orders", ["created_at", "id"], unique=False)
    op.create_index(
        "ix_orders_placed_by_user_id_created_at_id",
        "orders",
        ["placed_by_user_id", "created_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_orders_reserved_expires_at",
        "orders",
        ["expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.create_index(
        "ix_orders_status_created_at_id", "orders", ["status", "created_at", "id"], unique=False
    )
    op.create_table(
        "order_lines",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("location_id", sa.Uuid(), nullable=False),
        sa.Column("stock_level_id", sa.BigInteger(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price_minor", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_order_lines_quantity_positive")),
        sa.CheckConstraint("unit_price_minor >= 0", name=op.f("ck_order_lines_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["locations.id"],
            name=op.f("fk_order_lines_location_id_locations"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_lines_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_order_lines_product_id_products"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["stock_level_id"],
            ["stock_levels.id"],
            name=op.f("fk_order_lines_stock_level_id_stock_levels"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_lines")),
    )
    op.create_index("ix_order_lines_order_id", "order_lines", ["order_id"], unique=False)
    op.create_index(
        "ix_order_lines_stock_level_id", "order_lines", ["stock_level_id"], unique=False
    )
    op.add_column("stock_movements", sa.Column("order_id", sa.Uuid(), nullable=True))
    op.execute(
        "ALTER TABLE stock_movements ADD CONSTRAINT fk_stock_movements_order_id_orders "
        "FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE RESTRICT NOT VALID"
    )
    op.execute("ALTER TABLE stock_movements VALIDATE CONSTRAINT fk_stock_movements_order_id_orders")
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_stock_movements_order_id",
            "stock_movements",
            ["order_id"],
            unique=False,
            postgresql_where=sa.text("order_id IS NOT NULL"),
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_stock_movements_order_id_orders"), "stock_movements", type_="foreignkey"
    )
    op.drop_index(
        "ix_stock_movements_order_id",
        table_name="stock_movements",
        postgresql_where=sa.text("order_id IS NOT NULL"),
    )
    op.drop_column("stock_movements", "order_id")
    op.drop_index("ix_order_lines_stock_level_id", table_name="order_lines")
    op.drop_index("ix_order_lines_order_id", table_name="order_lines")
    op.drop_table("order_lines")
    op.drop_index("ix_orders_status_created_at_id", table_name="orders")
    op.drop_index(
        "ix_orders_reserved_expires_at",
        table_name="orders",
        postgresql_where=sa.text("status = 'reserved'"),
    )
    op.drop_index("ix_orders_placed_by_user_id_created_at_id", table_name="orders")
    op.drop_index("ix_orders_created_at_id", table_name="orders")
    op.drop_table("orders")
