"""Locations, stock levels and the ledger. Each public function owns its transaction.

Every stock change is one conditional UPDATE (`... WHERE on_hand + delta >= reserved`),
so concurrent writers serialise on the row lock the UPDATE takes and none can push a
level below what is reserved; the CHECK constraint backs it up. The ledger row is written
in the same transaction, so `on_hand` always equals the sum of the ledger.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.catalog.errors import ProductNotFound
from shelfwise.errors import InsufficientStock, InvalidCursor
from shelfwise.idempotency.service import IdempotentRequest, Outcome, run_idempotent_on
from shelfwise.inventory import domain, store
from shelfwise.inventory.errors import LocationCodeTaken as LocationCodeTaken
from shelfwise.inventory.errors import LocationNotFound as LocationNotFound
from shelfwise.inventory.models import Location, MovementKind, StockLevel, StockMovement
from shelfwise.inventory.store import LevelRow, MovementRow
from shelfwise.observability.metrics import STOCK_ADJUSTMENTS
from shelfwise.pagination import PageRequest, PageResult, page_from_rows
from shelfwise.store.unit import UnitOfWork, run_unit


def _int_key(after: tuple[str, ...] | None) -> int | None:
    if after is None:
        return None
    try:
        return int(after[0])
    except (ValueError, IndexError) as exc:
        raise InvalidCursor("The cursor does not fit this list") from exc


# -- locations ---------------------------------------------------------------------------


async def create_location(session: AsyncSession, *, code: str, name: str, kind: str) -> Location:
    location = Location(code=code, name=name, kind=kind)
    try:
        async with session.begin():
            session.add(location)
            await session.flush()
            await session.refresh(location)
    except IntegrityError as exc:
        raise LocationCodeTaken(f"Location code {code!r} is already in use") from exc
    return location


async def list_locations(session: AsyncSession, *, page: PageRequest) -> PageResult[Location]:
    stmt = select(Location).order_by(Location.code).limit(page.limit + 1)
    if page.after is not None:
        stmt = stmt.where(Location.code > page.after[0])
    async with session.begin():
        rows = (await session.scalars(stmt)).all()
    return page_from_rows(rows, page.limit, lambda loc: (loc.code,))


async def get_location(session: AsyncSession, location_id: uuid.UUID) -> Location:
    async with session.begin():
        location = await session.get(Location, location_id)
    if location is None:
        raise LocationNotFound(f"No location with id {location_id}")
    return location


# -- levels ------------------------------------------------------------------------------


async def list_stock_levels(
    session: AsyncSession,
    *,
    page: PageRequest,
    product_id: uuid.UUID | None = None,
    location_id: uuid.UUID | None = None,
) -> PageResult[StockLevel]:
    stmt = select(StockLevel).order_by(StockLevel.id).limit(page.limit + 1)
    if product_id is not None:
        stmt = stmt.where(StockLevel.product_id == product_id)
    if location_id is not None:
        stmt = stmt.where(StockLevel.location_id == location_id)
    if (after := _int_key(page.after)) is not None:
        stmt = stmt.where(StockLevel.id > after)
    async with session.begin():
        rows = (await session.scalars(stmt)).all()
    return page_from_rows(rows, page.limit, lambda level: (str(level.id),))


# -- adjustments -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Adjustment:
    product_id: uuid.UUID
    location_id: uuid.UUID
    kind: MovementKind
    quantity: int
    reason: str
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class AdjustmentResult:
    movement: MovementRow
    level: LevelRow


async def ensure_level(unit: UnitOfWork, product_id: uuid.UUID, location_id: uuid.UUID) -> None:
    """Create the level (0/0) unless it exists; the product and the location must."""
    product_exists, location_exists = await store.ensure_level(unit, product_id, location_id)
    if not product_exists:
        raise ProductNotFound(f"No product with id {product_id}")
    if not location_exists:
        raise LocationNotFound(f"No location with id {location_id}")


def refused_at(exc: InsufficientStock, **where: str) -> InsufficientStock:
    """The domain's refusal, with which level it concerns added to each line."""
    lines = [{**where, **line} for line in exc.extra.get("lines", [])]
    return InsufficientStock(exc.detail, lines=lines)


async def _apply_adjustment(
    unit: UnitOfWork, change: Adjustment, actor_id: uuid.UUID | None
) -> AdjustmentResult:
    await ensure_level(unit, change.product_id, change.location_id)
    level = await store.lock_one_at(unit, change.product_id, change.location_id)
    edits = store.StockEdits({level.id: level})
    try:
        edits.apply(
            level.id,
            lambda counters: domain.adjust(counters, change.quantity, change.kind),
            reason=change.reason,
            reference=change.reference,
        )
    except InsufficientStock as exc:
        raise refused_at(
            exc, product_id=str(change.product_id), location_id=str(change.location_id)
        ) from None
    written = await store.write(
        unit, edits, cause=change.kind.value, reference=change.reference, actor_id=actor_id
    )
    return AdjustmentResult(movement=written.movements[0], level=written.levels[level.id])


async def adjust_stock(
    session: AsyncSession,
    change: Adjustment,
    *,
    actor_id: uuid.UUID | None,
    idempotency: IdempotentRequest[AdjustmentResult] | None = None,
) -> Outcome[AdjustmentResult]:
    async def work(unit: UnitOfWork) -> Outcome[AdjustmentResult]:
        return await run_idempotent_on(
            unit.conn, idempotency, lambda: _apply_adjustment(unit, change, actor_id)
        )

    outcome = await run_unit(session, work, use_case="adjust_stock")
    if outcome.result is not None:
        STOCK_ADJUSTMENTS.labels(change.kind.value).inc()
    return outcome


# -- ledger ------------------------------------------------------------------------------


def movements_query(
    *,
    product_id: uuid.UUID | None,
    location_id: uuid.UUID | None,
    kind: MovementKind | None,
) -> Select[StockMovement]:
    stmt = select(StockMovement).order_by(StockMovement.id.desc())
    if product_id is not None:
        stmt = stmt.where(StockMovement.product_id == product_id)
    if location_id is not None:
        stmt = stmt.where(StockMovement.location_id == location_id)
    if kind is not None:
        stmt = stmt.where(StockMovement.kind == kind.value)
    return stmt


async def list_movements(
    session: AsyncSession,
    *,
    page: PageRequest,
    product_id: uuid.UUID | None = None,
    location_id: uuid.UUID | None = None,
    kind: MovementKind | None = None,
) -> PageResult[StockMovement]:
    """Newest first. New movements appended during a walk land before its start, so the
    walk never repeats or skips a row."""
    stmt = movements_query(product_id=product_id, location_id=location_id, kind=kind)
    if (after := _int_key(page.after)) is not None:
        stmt = stmt.where(StockMovement.id < after)
    async with session.begin():
        rows = (await session.scalars(stmt.limit(page.limit + 1))).all()
    return page_from_rows(rows, page.limit, lambda m: (str(m.id),))


@dataclass(frozen=True, slots=True)
class Drift:
    stock_level_id: int
    on_hand: int
    ledger_on_hand: int
    reserved: int
    ledger_reserved: int


def ledger_drift_statement() -> Select[int, int, Any, int, Any]:
    """Levels whose counters differ from the sum of their ledger rows (should be none)."""
    sums = (
        select(
            StockMovement.stock_level_id,
            func.sum(StockMovement.on_hand_delta).label("on_hand"),
            func.sum(StockMovement.reserved_delta).label("reserved"),
        )
        .group_by(StockMovement.stock_level_id)
        .subquery()
    )
    ledger_on_hand = func.coalesce(sums.c.on_hand, 0)
    ledger_reserved = func.coalesce(sums.c.reserved, 0)
    stmt = (
        select(
            StockLevel.id, StockLevel.on_hand, ledger_on_hand, StockLevel.reserved, ledger_reserved
        )
        .outerjoin(sums, sums.c.stock_level_id == StockLevel.id)
        .where((StockLevel.on_hand != ledger_on_hand) | (StockLevel.reserved != ledger_reserved))
        .order_by(StockLevel.id)
    )
    return stmt


async def reconcile(session: AsyncSession) -> list[Drift]:
    async with session.begin():
        rows = (await session.execute(ledger_drift_statement())).all()
    return [Drift(*row) for row in rows]
