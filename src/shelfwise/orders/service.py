"""Order use cases: place, read, confirm, cancel, fulfil. Each owns its transaction.

Isolation: READ COMMITTED throughout (docs/decisions/0010-isolation-levels.md). Stock is
reserved by conditional UPDATEs in ascending stock-level id order; order transitions lock
the order row first (`FOR UPDATE`), so two transitions of one order serialise and the
second sees the first's result. Transactions are still wrapped in `in_transaction`, which
retries a deadlock or serialization failure should one ever happen.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from shelfwise.catalog.models import Product
from shelfwise.errors import InsufficientStock, InvalidCursor
from shelfwise.events.outbox import emit_all
from shelfwise.events.payloads import order_event, stock_changed
from shelfwise.idempotency.service import IdempotentRequest, Outcome, run_idempotent
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import Scope
from shelfwise.inventory import reservations
from shelfwise.inventory.models import Location, MovementKind
from shelfwise.inventory.reservations import LevelChange
from shelfwise.inventory.service import LocationNotFound
from shelfwise.jobs.defer import defer_in_transaction
from shelfwise.observability.metrics import ORDER_TRANSITIONS, ORDERS_PLACED
from shelfwise.orders.allocation import Candidate, best_availability, candidate_locations
from shelfwise.orders.errors import (
    InvalidTransition,
    MixedCurrencies,
    OrderNotFound,
    ReservationExpired,
    UnknownProducts,
)
from shelfwise.orders.models import Order, OrderLine, OrderStatus
from shelfwise.pagination import PageRequest, PageResult, page_from_rows
from shelfwise.transactions import in_transaction


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    quantities: dict[uuid.UUID, int]  # product_id -> quantity, one entry per product
    location_id: uuid.UUID | None = None


def sees_all_orders(principal: Principal) -> bool:
    return Scope.ORDERS_MANAGE in principal.scopes


def _visible_to(stmt: Select[Order], principal: Principal) -> Select[Order]:
    """Object-level authorization (no BOLA): without `orders:manage`, only own orders."""
    if sees_all_orders(principal):
        return stmt
    if principal.kind is PrincipalKind.API_KEY:
        return stmt.where(Order.placed_by_api_key_id == principal.id)
    return stmt.where(Order.placed_by_user_id == principal.id)


# -- placing -----------------------------------------------------------------------------


async def place_order(
    session: AsyncSession,
    command: PlaceOrder,
    *,
    placer: Principal,
    now: datetime,
    reservation_ttl: timedelta,
    idempotency: IdempotentRequest[Order] | None,
) -> Outcome[Order]:
    async def attempt() -> Outcome[Order]:
        return await run_idempotent(
            session,
            idempotency,
            lambda: _place(session, command, placer, now + reservation_ttl),
        )

    try:
        outcome = await in_transaction(session, attempt, use_case="place_order")
    except InsufficientStock:
        ORDERS_PLACED.labels("insufficient_stock").inc()
        raise
    ORDERS_PLACED.labels("replayed" if outcome.replay else "reserved").inc()
    return outcome


async def _prices(
    session: AsyncSession, product_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[int, str]]:
    rows = await session.execute(
        select(Product.id, Product.price_minor, Product.currency).where(Product.id.in_(product_ids))
    )
    prices = {row[0]: (row[1], row[2]) for row in rows}
    missing = [str(p) for p in product_ids if p not in prices]
    if missing:
        raise UnknownProducts(f"Unknown products: {', '.join(missing)}", product_ids=missing)
    if len({currency for _, currency in prices.values()}) > 1:
        raise MixedCurrencies("Order products priced in one currency per order")
    return prices


async def _reserve_at(
    session: AsyncSession, quantities: dict[uuid.UUID, int], candidate: Candidate
) -> list[LevelChange] | None:
    """Reserve every line at one location, in lock order; None if any line fell short."""
    changes: list[LevelChange] = []
    for level in sorted(candidate.levels.values(), key=lambda lv: lv.stock_level_id):
        quantity = quantities[level.product_id]
        if not await reservations.try_reserve(session, level.stock_level_id, quantity):
            return None
        changes.append(
            LevelChange(
                level.stock_level_id,
                level.product_id,
                level.location_id,
                on_hand_delta=0,
                reserved_delta=quantity,
            )
        )
    return changes


async def _reserve_somewhere(session: AsyncSession, command: PlaceOrder) -> list[LevelChange]:
    quantities = command.quantities
    levels = await reservations.availability(session, list(quantities), command.location_id)
    if command.location_id and not levels and not await session.get(Location, command.location_id):
        raise LocationNotFound(f"No location with id {command.location_id}")
    candidates = candidate_locations(quantities, levels)
    for index, candidate in enumerate(candidates):
        last = index == len(candidates) - 1
        if len(quantities) == 1 or last:
            # A failed single conditional UPDATE changed nothing, and a failure at the
            # last candidate rolls the whole transaction back: no savepoint needed.
            if changes := await _reserve_at(session, quantities, candidate):
                return changes
            continue
        savepoint = await session.begin_nested()
        if changes := await _reserve_at(session, quantities, candidate):
            await savepoint.commit()
            return changes
        await savepoint.rollback()
    fresh = await reservations.availability(session, list(quantities), command.location_id)
    raise InsufficientStock(
        "No single location has enough unreserved stock for every line",
        lines=best_availability(quantities, fresh),
    )


async def _place(
    session: AsyncSession, command: PlaceOrder, placer: Principal, expires_at: datetime
) -> Order:
    prices = await _prices(session, list(command.quantities))
    changes = await _reserve_somewhere(session, command)
    currency = next(iter(prices.values()))[1]
    order = Order(
        id=uuid.uuid4(),
        status=OrderStatus.RESERVED.value,
        currency=currency,
        total_minor=sum(prices[p][0] * q for p, q in command.quantities.items()),
        expires_at=expires_at,
        placed_by_user_id=placer.user_id,
        placed_by_api_key_id=placer.id if placer.kind is PrincipalKind.API_KEY else None,
    )
    order.lines = [
        OrderLine(
            product_id=c.product_id,
            location_id=c.location_id,
            stock_level_id=c.stock_level_id,
            quantity=c.reserved_delta,
            unit_price_minor=prices[c.product_id][0],
            currency=currency,
        )
        for c in changes
    ]
    session.add(order)
    await session.flush()
    await reservations.record_movements(
        session,
        changes,
        kind=MovementKind.RESERVE,
        reason="order reserved",
        order_id=order.id,
        actor_id=placer.user_id,
    )
    await stock_changed(
        session, [c.stock_level_id for c in changes], cause="reserve", reference=f"order:{order.id}"
    )
    await emit_all(session, [order_event(order)])
    # Committed with the order or not at all: expiry on time, without waiting for the sweep.
    await defer_in_transaction(
        session, "expire_order", {"order_id": str(order.id)}, scheduled_at=expires_at
    )
    return order


# -- reading -----------------------------------------------------------------------------


async def get_order(session: AsyncSession, order_id: uuid.UUID, *, viewer: Principal) -> Order:
    stmt = _visible_to(select(Order).options(selectinload(Order.lines)), viewer)
    async with session.begin():
        order = await session.scalar(stmt.where(Order.id == order_id))
    if order is None:
        # The same 404 whether it does not exist or belongs to someone else.
        raise OrderNotFound(f"No order with id {order_id}")
    return order


def order_sort_key(order: Order) -> tuple[str, ...]:
    return (order.created_at.isoformat(), str(order.id))


async def list_orders(
    session: AsyncSession,
    *,
    viewer: Principal,
    page: PageRequest,
    status: OrderStatus | None = None,
) -> PageResult[Order]:
    """Newest first, keyset on (created_at, id)."""
    stmt = _visible_to(select(Order).options(selectinload(Order.lines)), viewer)
    if status is not None:
        stmt = stmt.where(Order.status == status.value)
    if page.after is not None:
        try:
            created_at, last_id = datetime.fromisoformat(page.after[0]), uuid.UUID(page.after[1])
        except (ValueError, IndexError) as exc:
            raise InvalidCursor("The cursor does not fit this list") from exc
        stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(created_at, last_id))
    stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(page.limit + 1)
    async with session.begin():
        rows = (await session.scalars(stmt)).all()
    return page_from_rows(rows, page.limit, order_sort_key)


# -- transitions -------------------------------------------------------------------------


async def _lock_order(session: AsyncSession, order_id: uuid.UUID, actor: Principal) -> Order:
    stmt = _visible_to(select(Order), actor).where(Order.id == order_id).with_for_update()
    order = await session.scalar(stmt)
    if order is None:
        raise OrderNotFound(f"No order with id {order_id}")
    lines = (
        await session.scalars(
            select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.id)
        )
    ).all()
    set_committed_value(order, "lines", list(lines))
    return order


def _require_status(order: Order, target: OrderStatus, *allowed: OrderStatus) -> None:
    if order.status not in allowed:
        raise InvalidTransition(
            f"Cannot move an order from {order.status} to {target.value}",
            current_status=order.status,
            target_status=target.value,
        )


def _line_changes(order: Order, *, on_hand_sign: int, reserved_sign: int) -> list[LevelChange]:
    return [
        LevelChange(
            line.stock_level_id,
            line.product_id,
            line.location_id,
            on_hand_delta=on_hand_sign * line.quantity,
            reserved_delta=reserved_sign * line.quantity,
        )
        for line in order.lines
    ]


async def _move_stock(
    session: AsyncSession,
    order: Order,
    changes: list[LevelChange],
    *,
    kind: MovementKind,
    reason: str,
    actor: Principal,
) -> None:
    await reservations.apply_changes(session, changes)
    await reservations.record_movements(
        session, changes, kind=kind, reason=reason, order_id=order.id, actor_id=actor.user_id
    )
    await stock_changed(
        session,
        [c.stock_level_id for c in changes],
        cause=kind.value,
        reference=f"order:{order.id}",
    )


def _set_status(order: Order, status: OrderStatus, now: datetime) -> None:
    order.status = status.value
    order.version += 1
    order.updated_at = now
    ORDER_TRANSITIONS.labels(status.value).inc()


async def _transition(
    session: AsyncSession, order_id: uuid.UUID, actor: Principal, now: datetime, target: OrderStatus
) -> Order:
    async def work() -> Order:
        order = await _lock_order(session, order_id, actor)
        if target is OrderStatus.CONFIRMED:
            _require_status(order, target, OrderStatus.RESERVED)
            if order.expires_at <= now:
                raise ReservationExpired(
                    "The reservation expired; place the order again",
                    expired_at=order.expires_at.isoformat(),
                )
            # Reserved units leave the building: both counters drop.
            await _move_stock(
                session,
                order,
                _line_changes(order, on_hand_sign=-1, reserved_sign=-1),
                kind=MovementKind.COMMIT,
                reason="order confirmed",
                actor=actor,
            )
        elif target is OrderStatus.CANCELLED:
            _require_status(order, target, OrderStatus.RESERVED, OrderStatus.CONFIRMED)
            if order.status == OrderStatus.RESERVED:
                await _move_stock(
                    session,
                    order,
                    _line_changes(order, on_hand_sign=0, reserved_sign=-1),
                    kind=MovementKind.RELEASE,
                    reason="order cancelled",
                    actor=actor,
                )
            else:
                await _move_stock(
                    session,
                    order,
                    _line_changes(order, on_hand_sign=1, reserved_sign=0),
                    kind=MovementKind.RECEIPT,
                    reason="restock: confirmed order cancelled",
                    actor=actor,
                )
        else:
            _require_status(order, target, OrderStatus.CONFIRMED)
        _set_status(order, target, now)
        await session.flush()
        await emit_all(session, [order_event(order)])
        return order

    return await in_transaction(session, work, use_case=f"order_{target.value}")


async def confirm_order(
    session: AsyncSession, order_id: uuid.UUID, *, actor: Principal, now: datetime
) -> Order:
    return await _transition(session, order_id, actor, now, OrderStatus.CONFIRMED)


async def cancel_order(
    session: AsyncSession, order_id: uuid.UUID, *, actor: Principal, now: datetime
) -> Order:
    return await _transition(session, order_id, actor, now, OrderStatus.CANCELLED)


async def fulfil_order(
    session: AsyncSession, order_id: uuid.UUID, *, actor: Principal, now: datetime
) -> Order:
    return await _transition(session, order_id, actor, now, OrderStatus.FULFILLED)
