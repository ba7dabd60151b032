"""Catalog use cases. Each public function owns its transaction.

Writes run in a unit of work over the caller's session (`unit_of_work(session)`,
`store/unit.py`): the ORM statements and the `product.*` events share one transaction,
and the unit wakes the relay after the commit, as for every other writer of events.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from shelfwise.catalog.errors import ProductNotFound as ProductNotFound
from shelfwise.catalog.models import Product
from shelfwise.catalog.schemas import ProductSort
from shelfwise.driverpool import DriverPool
from shelfwise.errors import AlreadyExists, Conflict, InvalidCursor, VersionMismatch
from shelfwise.events.payloads import EventType, product_deleted, product_event
from shelfwise.pagination import PageRequest, PageResult, page_from_rows
from shelfwise.store.unit import unit_of_work
from shelfwise.uploads.service import detach_image


class SkuTaken(AlreadyExists):
    code = "sku_taken"
    title = "SKU already in use"


class ProductInUse(Conflict):
    code = "product_in_use"
    title = "Product has stock history"


# sort -> (column, parse cursor value, descending?)
_SORTS: dict[ProductSort, tuple[InstrumentedAttribute[Any], Callable[[str], Any], bool]] = {
    ProductSort.CREATED: (Product.created_at, datetime.fromisoformat, False),
    ProductSort.CREATED_DESC: (Product.created_at, datetime.fromisoformat, True),
    ProductSort.NAME: (Product.name, str, False),
    ProductSort.NAME_DESC: (Product.name, str, True),
    ProductSort.PRICE: (Product.price_minor, int, False),
    ProductSort.PRICE_DESC: (Product.price_minor, int, True),
    ProductSort.SKU: (Product.sku, str, False),
    ProductSort.SKU_DESC: (Product.sku, str, True),
}

_WORD = re.compile(r"(-?)(\w+)", re.UNICODE)


def _term(sign: str, word: str) -> str:
    if sign and word.isascii() and word.isdigit():
        # PostgreSQL's parser indexes `KET-03` as `ket` and the signed integer `-03`,
        # but `A1-03` as `a1-03`, `a1` and `03`: accept either form of the number.
        return f"('-{word}':* | {word}:*)"
    return f"{word}:*"


def prefix_tsquery(text: str) -> str | None:
    """`red mug` -> `red:* & mug:*`. Only word characters (and a `-` before digits)
    survive, so the user's text can never be tsquery syntax; it is still sent as a bind
    parameter."""
    words = _WORD.findall(text.lower())[:8]
    return " & ".join(_term(sign, word) for sign, word in words) or None


def sort_key(product: Product, sort: ProductSort) -> tuple[str, ...]:
    value = getattr(product, _SORTS[sort][0].key)
    return (value.isoformat() if isinstance(value, datetime) else str(value), str(product.id))


def _apply_keyset(
    stmt: Select[Product], sort: ProductSort, after: tuple[str, ...] | None
) -> Select[Product]:
    column, parse, descending = _SORTS[sort]
    if after is not None:
        try:
            value, last_id = parse(after[0]), uuid.UUID(after[1])
        except (ValueError, IndexError) as exc:
            raise InvalidCursor("The cursor does not fit this list") from exc
        position: ColumnElement[bool] = (
            tuple_(column, Product.id) < tuple_(value, last_id)
            if descending
            else tuple_(column, Product.id) > tuple_(value, last_id)
        )
        stmt = stmt.where(position)
    order = (column.desc(), Product.id.desc()) if descending else (column.asc(), Product.id.asc())
    return stmt.order_by(*order)


async def list_products(
    session: AsyncSession,
    *,
    page: PageRequest,
    sort: ProductSort = ProductSort.CREATED,
    q: str | None = None,
    category: str | None = None,
) -> PageResult[Product]:
    stmt = select(Product)
    if q and (query := prefix_tsquery(q)):
        stmt = stmt.where(Product.search.op("@@")(func.to_tsquery("simple", query)))
    if category:
        stmt = stmt.where(Product.category == category)
    stmt = _apply_keyset(stmt, sort, page.after).limit(page.limit + 1)
    async with session.begin():
        rows = (await session.scalars(stmt)).all()
    return page_from_rows(rows, page.limit, lambda p: sort_key(p, sort))


PRODUCT_BY_ID_SQL = (
    "SELECT id, sku, name, description, category, price_minor, currency, version,"
    " created_at, updated_at FROM products WHERE id = %s"
)


async def read_product(driver: DriverPool, product_id: uuid.UUID) -> dict[str, Any]:
    """The hot read path: one fixed statement on the driver pool (see
    `shelfwise.driverpool`). Same result as `get_product`, at a fraction of the cost."""
    row = await driver.fetch_one(PRODUCT_BY_ID_SQL, (product_id,))
    if row is None:
        raise ProductNotFound(f"No product with id {product_id}")
    return row


async def create_product(session: AsyncSession, **fields: Any) -> Product:
    product = Product(**fields)
    try:
        async with unit_of_work(session) as unit:
            session.add(product)
            await session.flush()
            await session.refresh(product)
            unit.emit(product_event(product, EventType.PRODUCT_CREATED))
    except IntegrityError as exc:
        raise SkuTaken(f"SKU {fields.get('sku')!r} is already in use") from exc
    return product


async def update_product(
    session: AsyncSession,
    product_id: uuid.UUID,
    *,
    expected_version: int | None,
    changes: dict[str, Any],
) -> Product:
    """Optimistic concurrency: the UPDATE only matches the version the caller last read
    (None: `If-Match: *`, any version)."""
    conditions = [Product.id == product_id]
    if expected_version is not None:
        conditions.append(Product.version == expected_version)
    stmt = (
        update(Product)
        .where(*conditions)
        .values(**changes, version=Product.version + 1, updated_at=func.clock_timestamp())
        .returning(Product)
        .execution_options(populate_existing=True)
    )
    try:
        async with unit_of_work(session) as unit:
            product = (await session.scalars(stmt)).one_or_none()
            if product is None:
                exists = await session.scalar(
                    select(Product.version).where(Product.id == product_id)
                )
                if exists is None:
                    raise ProductNotFound(f"No product with id {product_id}")
                raise VersionMismatch("The product changed since you read it; re-read and retry")
            unit.emit(product_event(product, EventType.PRODUCT_UPDATED))
    except IntegrityError as exc:
        raise SkuTaken(f"SKU {changes.get('sku')!r} is already in use") from exc
    return product


async def delete_product(
    session: AsyncSession, product_id: uuid.UUID, *, expected_version: int | None = None
) -> str | None:
    """Returns the content hash of the product's image, if it had one: its file is to be
    released (`uploads.service.release_image`) now that the deletion has committed."""
    conditions = [Product.id == product_id]
    if expected_version is not None:
        conditions.append(Product.version == expected_version)
    try:
        async with unit_of_work(session) as unit:
            image = await detach_image(session, product_id)
            deleted = await session.execute(
                delete(Product).where(*conditions).returning(Product.id)
            )
            if deleted.first() is None:
                if await session.scalar(select(Product.id).where(Product.id == product_id)):
                    raise VersionMismatch("The product changed since you read it")
                raise ProductNotFound(f"No product with id {product_id}")
            unit.emit(product_deleted(product_id))
    except IntegrityError as exc:
        raise ProductInUse("Products with stock history cannot be deleted") from exc
    return image
