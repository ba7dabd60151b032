"""Reservation expiry, and the reservation side of reconciliation.

`expire_reservations(now)` releases every reservation whose `expires_at` has passed,
exactly once, however many expirers run at the same time: each batch locks its orders
with `FOR UPDATE SKIP LOCKED` (concurrent expirers take disjoint batches, and an order
being confirmed right now is skipped, not waited on), and re-checks `status = 'reserved'`
under the lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.inventory.models import StockLevel
from shelfwise.observability.metrics import ORDER_TRANSITIONS, RESERVATIONS_EXPIRED
from shelfwise.orders import store
from shelfwise.orders.lifecycle import OrderAction
from shelfwise.orders.models import Order, OrderLine, OrderStatus
from shelfwise.store.unit import UnitOfWork, run_unit

log = structlog.get_logger("shelfwise.orders.expiry")


async def _expire_batch(unit: UnitOfWork, now: datetime, batch_size: int) -> int:
    orders = await store.lock_expired(unit, now, batch_size)
    # One `move` for the whole batch: its levels are locked in ascending id across every
    # order of the batch, so the global lock order holds here too.
    await store.move(
        unit, orders, OrderAction.EXPIRE, now=now, actor_id=None, stock_reference="expiry"
    )
    return len(orders)


async def expire_reservations(
    session: AsyncSession, *, now: datetime, batch_size: int = 500
) -> int:
    """Expire every reservation due at `now`; returns how many orders this call expired."""
    total = 0
    while True:
        expired = await run_unit(
            session,
            lambda unit: _expire_batch(unit, now, batch_size),
            use_case="expire_reservations",
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
