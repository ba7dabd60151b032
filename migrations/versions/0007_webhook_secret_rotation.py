"""Webhook secret rotation (the previous secret and when it stops signing); an index to
find the products that use an image file.

Revision ID: 0007_webhook_secret_rotation
Revises: 0006_webhooks_uploads
Create Date: 2026-11-21

Two nullable columns without defaults: a catalog-only change, no table rewrite, and the
short `lock_timeout` set in env.py bounds the wait for the ACCESS EXCLUSIVE lock. The
index is built CONCURRENTLY (no write lock on `product_images`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_webhook_secret_rotation"
down_revision: str | None = "0006_webhooks_uploads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "webhook_subscriptions", sa.Column("previous_secret", sa.String(128), nullable=True)
    )
    op.add_column(
        "webhook_subscriptions",
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_product_images_sha256",
            "product_images",
            ["sha256"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_product_images_sha256",
            table_name="product_images",
            postgresql_concurrently=True,
            if_exists=True,
        )
    op.drop_column("webhook_subscriptions", "previous_secret_expires_at")
    op.drop_column("webhook_subscriptions", "previous_secret")
