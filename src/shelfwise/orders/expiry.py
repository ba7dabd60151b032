"""Reservation expiry, and the reservation side of reconciliation.

`expire_reservations(now)` releases every reservation whose `expires_at` has passed,
exactly once, however many expirers run at the same time: each batch locks its orders
with `FOR UPDATE SKIP LOCKED` (concurrent expirers take disjoint batches, and an order
being confirmed right now is skipped, not waited on), and re-checks `status = 'reserved'`
under the lock.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.events.outbox import emit_all
from shelfwise.events.payloads import order_event, stock_changed
from shelfwise.inventory import reservations
from shelfwise.inventory.models import MovementKind, StockLevel
from shelfwise.inventory.reservations import LevelChange
from shelfwise.observability.metrics import ORDER_TRANSITIONS, RESERVATIONS_EXPIRED
from shelfwise.orders.models import Order, OrderLine, OrderStatus
from shelfwise.transactions import in_transaction

log = structlog.get_logger("shelfwise.orders.expiry")


async def _expire_batch(session: AsyncSession, now: datetime, batch_size: int) -> int:
    order_ids = list(
        (
            await session.scalars(
                select(Order.id)
                .where(Order.status == OrderStatus.RESERVED.value, Order.expires_at <= now)
                .order_by(Order.expires_at)
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            )
        ).all()
    )
    if not order_ids:
        return 0
    lines = (
        await session.execute(
            select(
                OrderLine.order_id,
                OrderLine.stock_level_id,
                OrderLine.product_id,
                OrderLine.location_id,
                OrderLine.quantity,
            ).where(OrderLine.order_id.in_(order_ids))
        )
    ).all()
    by_order: dict[uuid.UUID, list[LevelChange]] = {}
    for line in lines:
        by_order.setdefault(line.order_id, []).append(
            LevelChange(line.stock_level_id, line.product_id, line.location_id, 0, -line.quantity)
        )
    # apply_changes sums per level and updates in ascending level id: lock order holds
    # across the whole batch, not just within one order.
    await reservations.apply_changes(
        session, [change for changes in by_order.values() for change in changes]
    )
    for order_id, changes in by_order.items():
        await reservations.record_movements(
            session,
            changes,
            kind=MovementKind.RELEASE,
            reason="reservation expired",
            order_id=order_id,
        )
    expired = await session.execute(
        update(Order)
        .where(Order.id.in_(order_ids))
        .values(status=OrderStatus.EXPIRED.value, version=Order.version + 1, updated_at=now)
        .returning(
            Order.id,
            Order.status,
            Order.currency,
            Order.total_minor,
            Order.expires_at,
            Order.placed_by_user_id,
            Order.placed_by_api_key_id,
        )
    )
    await stock_changed(
        session, {line.stock_level_id for line in lines}, cause="release", reference="expiry"
    )
    await emit_all(
        session,
        [order_event(row, [line for line in lines if line.order_id == row.id]) for row in expired],
    )
    return len(order_ids)


async def expire_reservations(
    session: AsyncSession, *, now: datetime, batch_size: int = 500
) -> int:
    """Expire every reservation due at `now`; returns how many orders this call expired."""
    total = 0
    while True:
        expired = await in_transaction(
            session, lambda: _expire_batch(session, now, batch_size), use_case="expire_reservations"
        )
        if not expired:
            break
        total += expired
        RESERVATIONS_EXPIRED.inc(expired)
        ORDER_TRANSITIONS.labels(OrderStatus.EXPIRED.value).inc(expired)
    if total:
        log.info("reservations_expired", count=total)
    return total


@dataclass(frozen=True, slots=True)
class ReservationDrift:
    stock_level_id: int
    reserved: int
    open_reservations: int


def reservation_drift_statement() -> Select[int, int, Any]:
    """Levels whose `reserved` differs from the lines of orders still in `reserved`."""
    open_lines = (
        select(OrderLine.stock_level_id, func.sum(OrderLine.quantity).label("quantity"))
        .join(Order, Order.id == OrderLine.order_id)
        .where(Order.status == OrderStatus.RESERVED.value)
        .group_by(OrderLine.stock_level_id)
        .subquery()
    )
    held = func.coalesce(open_lines.c.quantity, 0)
    stmt = (
        select(StockLevel.id, StockLevel.reserved, held)
        .outerjoin(open_lines, open_lines.c.stock_level_id == StockLevel.id)
        .where(StockLevel.reserved != held)
        .order_by(StockLevel.id)
    )
    return stmt
