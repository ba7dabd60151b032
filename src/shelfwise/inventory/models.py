from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

# Imported at run time, not only for typing: the mapper must find Product whichever
# module a process imports first.
from shelfwise.catalog.models import Product
from shelfwise.db import Base, relation
from shelfwise.inventory.domain import MovementKind

__all__ = ["Location", "MovementKind", "StockLevel", "StockMovement", "level_key"]


class Location(Base):
    __tablename__ = "locations"

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), server_default="warehouse")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class StockLevel(Base):
    """How many units of one product one location holds, and how many are promised."""

    __tablename__ = "stock_levels"
    __table_args__ = (
        # The invariant lives in the database: even a buggy code path cannot oversell.
        CheckConstraint("reserved >= 0 AND reserved <= on_hand", name="reserved_within_on_hand"),
        Index("ix_stock_levels_location_id_product_id", "location_id", "product_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # RESTRICT: a product or location with stock history cannot vanish silently.
    product_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    location_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("locations.id", ondelete="RESTRICT"))
    on_hand: Mapped[int] = mapped_column(server_default=text("0"))
    reserved: Mapped[int] = mapped_column(server_default=text("0"))
    version: Mapped[int] = mapped_column(server_default=text("1"))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    product: Mapped[Product] = relation("Product")
    location: Mapped[Location] = relation("Location")

    __mapper_args__ = {"eager_defaults": True}

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


# (product_id, location_id) is unique; declared separately so the name follows the convention.
Index(
    "uq_stock_levels_product_id_location_id",
    StockLevel.product_id,
    StockLevel.location_id,
    unique=True,
)
# What order lines and ledger rows reference (`level_key`): one foreign key says both
# which level a row is about and that its product and location are the level's.
Index(
    "uq_stock_levels_id_product_id_location_id",
    StockLevel.id,
    StockLevel.product_id,
    StockLevel.location_id,
    unique=True,
)


def level_key() -> ForeignKeyConstraint:
    """The composite foreign key of a row about one level: (stock_level_id, product_id,
    location_id) to the level's (id, product_id, location_id). One check and one row lock
    per insert instead of three (the level's product and location follow from the level's
    own keys; docs/decisions/0046). Its name is the convention's for `stock_level_id`."""
    return ForeignKeyConstraint(
        ["stock_level_id", "product_id", "location_id"],
        ["stock_levels.id", "stock_levels.product_id", "stock_levels.location_id"],
        ondelete="RESTRICT",
    )


class StockMovement(Base):
    """The append-only ledger. `on_hand` of a level always equals the sum of its
    `on_hand_delta`s, and `reserved` the sum of its `reserved_delta`s. A trigger refuses
    UPDATE and DELETE on this table."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('receipt','adjustment','reserve','release','commit',"
            "'transfer_in','transfer_out')",
            name="kind_known",
        ),
        CheckConstraint("on_hand_delta <> 0 OR reserved_delta <> 0", name="moves_something"),
        Index("ix_stock_movements_stock_level_id_id", "stock_level_id", "id"),
        Index("ix_stock_movements_product_id_id", "product_id", "id"),
        Index("ix_stock_movements_location_id_id", "location_id", "id"),
        Index("ix_stock_movements_kind_id", "kind", "id"),
        Index(
            "ix_stock_movements_order_id", "order_id", postgresql_where=text("order_id IS NOT NULL")
        ),
        level_key(),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    stock_level_id: Mapped[int] = mapped_column(BigInteger)
    product_id: Mapped[uuid.UUID]
    location_id: Mapped[uuid.UUID]
    kind: Mapped[str] = mapped_column(String(16))
    on_hand_delta: Mapped[int]
    reserved_delta: Mapped[int] = mapped_column(server_default=text("0"))
    reason: Mapped[str] = mapped_column(Text, server_default="")
    reference: Mapped[str | None] = mapped_column(String(200))
    # RESTRICT, not SET NULL: the ledger is append-only, so users with history are
    # disabled rather than deleted.
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    order_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
