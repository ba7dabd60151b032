"""The stock overview: levels joined with their product's SKU and name and their
location's code and name, for people (the staff console) rather than integrations.

Sorted by SKU, then location code — both unique, so the pair is a keyset. `q` is the
catalog's prefix search (SKU and name words, `docs/decisions/0006-text-search.md`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.catalog.models import Product
from shelfwise.catalog.service import prefix_tsquery
from shelfwise.errors import InvalidCursor
from shelfwise.inventory.models import Location, StockLevel
from shelfwise.pagination import PageRequest, PageResult, page_from_rows


@dataclass(frozen=True, slots=True)
class StockRow:
    id: int
    product_id: uuid.UUID
    sku: str
    product_name: str
    location_id: uuid.UUID
    location_code: str
    location_name: str
    on_hand: int
    reserved: int
    version: int
    updated_at: datetime
    low: bool

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True, slots=True)
class OverviewFilter:
    q: str | None = None
    location_id: uuid.UUID | None = None
    low_only: bool = False


def _key(row: StockRow) -> tuple[str, ...]:
    return (row.sku, row.location_code)


async def stock_overview(
    session: AsyncSession, *, page: PageRequest, where: OverviewFilter, low_threshold: int
) -> PageResult[StockRow]:
    """One page of levels with names; `low` marks `available < low_threshold`."""
    available = StockLevel.on_hand - StockLevel.reserved
    stmt = (
        select(
            StockLevel.id,
            StockLevel.product_id,
            Product.sku,
            Product.name.label("product_name"),
            StockLevel.location_id,
            Location.code.label("location_code"),
            Location.name.label("location_name"),
            StockLevel.on_hand,
            StockLevel.reserved,
            StockLevel.version,
            StockLevel.updated_at,
            (available < low_threshold).label("low"),
        )
        .join(Product, Product.id == StockLevel.product_id)
        .join(Location, Location.id == StockLevel.location_id)
        .order_by(Product.sku, Location.code)
        .limit(page.limit + 1)
    )
    if where.q and (query := prefix_tsquery(where.q)):
        stmt = stmt.where(Product.search.op("@@")(func.to_tsquery("simple", query)))
    if where.location_id is not None:
        stmt = stmt.where(StockLevel.location_id == where.location_id)
    if where.low_only:
        stmt = stmt.where(available < low_threshold)
    if page.after is not None:
        if len(page.after) != 2:
            raise InvalidCursor("The cursor does not fit this list")
        stmt = stmt.where(tuple_(Product.sku, Location.code) > tuple_(*page.after))
    async with session.begin():
        rows = [StockRow(**row._asdict()) for row in (await session.execute(stmt)).all()]
    return page_from_rows(rows, page.limit, _key)
