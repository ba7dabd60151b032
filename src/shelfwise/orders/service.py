"""Order use cases: place, read, confirm, cancel, fulfil. Each owns its transaction.

Isolation: READ COMMITTED throughout (docs/decisions/0010-isolation-levels.md). Stock is
reserved by conditional UPDATEs in ascending stock-level id order; order transitions lock
the order row first (`FOR UPDATE`), so two transitions of one order serialise and the
second sees the first's result. Transactions are still wrapped in `in_transaction`, which
retries a deadlock or serialization failure should one ever happen.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from shelfwise.driverpool import DriverPool
from shelfwise.errors import InsufficientStock, InvalidCursor
from shelfwise.events.doorbell import Doorbell
from shelfwise.events.outbox import emit_all
from shelfwise.events.payloads import order_event, stock_changed
from shelfwise.idempotency.service import IdempotentRequest, Outcome, run_idempotent_on
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import Scope
from shelfwise.inventory import reservations
from shelfwise.inventory.models import MovementKind
from shelfwise.inventory.reservations import LevelChange
from shelfwise.observability.metrics import ORDER_TRANSITIONS, ORDERS_PLACED
from shelfwise.orders import placement
from shelfwise.orders.errors import InvalidTransition, OrderNotFound, ReservationExpired
from shelfwise.orders.models import Order, OrderLine, OrderStatus
from shelfwise.orders.placement import PlacedOrder
from shelfwise.pagination import PageRequest, PageResult, page_from_rows
from shelfwise.transactions import in_driver_transaction, in_transaction


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
    driver: DriverPool,
    doorbell: Doorbell,
    command: PlaceOrder,
    *,
    placer: Principal,
    now: datetime,
    reservation_ttl: timedelta,
    idempotency: IdempotentRequest[PlacedOrder] | None,
) -> Outcome[PlacedOrder]:
    """Reserve and record the order. The hottest write runs on the driver pool with fixed
    SQL (`orders.placement`, docs/decisions/0013); the rules are the same as everywhere.
    Expiry needs no job per order: the minute sweep releases it, and confirming refuses
    it from `expires_at` on."""

    async def attempt(conn: AsyncConnection[Any]) -> Outcome[PlacedOrder]:
        effect = partial(
            placement.place,
            conn,
            command.quantities,
            command.location_id,
            placer=placer,
            expires_at=now + reservation_ttl,
        )
        return await run_idempotent_on(conn, idempotency, effect)

    try:
        outcome = await in_driver_transaction(driver, attempt, use_case="place_order")
    except InsufficientStock:
        ORDERS_PLACED.labels("insufficient_stock").inc()
        raise
    if outcome.replay is None:
        doorbell.ring()  # committed events: wake the relay (events/doorbell.py)
    ORDERS_PLACED.labels("replayed" if outcome.replay else "reserved").inc()
    return outcome


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
        await emit_all(session, [order_event(order, order.lines)])
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
