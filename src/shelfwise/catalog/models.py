from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Computed, Index, String, Text, func, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from shelfwise.db import Base

# 'simple' config: SKUs and product names are not natural-language prose to be stemmed.
SEARCH_EXPRESSION = (
    "to_tsvector('simple', name || ' ' || sku || ' ' || category || ' ' || description)"
)


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("price_minor >= 0", name="price_non_negative"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency_iso"),
        CheckConstraint("length(sku) between 1 and 64", name="sku_length"),
        # One index per list order the API offers; `id` breaks ties for keyset pagination.
        Index("ix_products_created_at_id", "created_at", "id"),
        Index("ix_products_name_id", "name", "id"),
        Index("ix_products_price_minor_id", "price_minor", "id"),
        Index("ix_products_category_created_at_id", "category", "created_at", "id"),
        Index("ix_products_search", "search", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, server_default="")
    category: Mapped[str] = mapped_column(String(64), server_default="general")
    price_minor: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    search: Mapped[str] = mapped_column(
        TSVECTOR, Computed(SEARCH_EXPRESSION, persisted=True), deferred=True
    )
    version: Mapped[int] = mapped_column(server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
    # clock_timestamp(), as created_at: now() is the transaction start, before it.
    updated_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
