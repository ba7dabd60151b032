from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from shelfwise.db import Base, relation
from shelfwise.inventory.models import level_key
from shelfwise.orders.lifecycle import OrderStatus

__all__ = ["Order", "OrderLine", "OrderStatus"]


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(
            "status IN ('reserved','confirmed','fulfilled','cancelled','expired')",
            name="status_known",
        ),
        # Placed by a user or by an integration's API key: exactly one of them.
        CheckConstraint(
            "(placed_by_user_id IS NULL) <> (placed_by_api_key_id IS NULL)", name="one_placer"
        ),
        CheckConstraint("total_minor >= 0", name="total_non_negative"),
        Index("ix_orders_placed_by_user_id_created_at_id", "placed_by_user_id", "created_at", "id"),
        Index("ix_orders_created_at_id", "created_at", "id"),
        Index("ix_orders_status_created_at_id", "status", "created_at", "id"),
        # Only open reservations are ever scanned for expiry; a partial index stays tiny.
        Index(
            "ix_orders_reserved_expires_at",
            "expires_at",
            postgresql_where=text("status = 'reserved'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    status: Mapped[str] = mapped_column(String(16))
    placed_by_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT")
    )
    placed_by_api_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="RESTRICT")
    )
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
    # clock_timestamp(), as created_at: now() is the transaction start, before it.
    updated_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())

    lines: Mapped[list[OrderLine]] = relation("OrderLine", order_by="OrderLine.id")

    # Fetch server-generated columns (created_at, version) with RETURNING on insert.
    __mapper_args__ = {"eager_defaults": True}


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor >= 0", name="price_non_negative"),
        Index("ix_order_lines_order_id", "order_id"),
        Index("ix_order_lines_stock_level_id", "stock_level_id"),
        level_key(),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # CASCADE: lines have no life of their own (orders are never deleted in practice).
    order_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    # The level, its product and its location: one composite key (`level_key`).
    product_id: Mapped[uuid.UUID]
    location_id: Mapped[uuid.UUID]
    stock_level_id: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int]
    unit_price_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
