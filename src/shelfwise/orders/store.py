"""The only writer of `orders` and `order_lines` after placement, and of `order.*` events.

Placing an order is `orders/placement.py` (the hot path, fixed SQL on the driver);
every later step of an order goes through `move`: lock the orders, ask the lifecycle
table (`orders/lifecycle.py`) what the action does from each order's status, apply its
stock effect to every line through the stock writer (`inventory/store.py`), set the new
status and emit `order.<status>`. Lock order: the order rows first, then their levels in
ascending id, the same in every writer.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from shelfwise.driverpool import fetch_row, fetch_rows
from shelfwise.events.payloads import order_event
from shelfwise.inventory import store as stock
from shelfwise.orders.lifecycle import OrderAction, OrderStatus, transition
from shelfwise.store import sql
from shelfwise.store.unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class LineRow:
    order_id: uuid.UUID
    product_id: uuid.UUID
    location_id: uuid.UUID
    stock_level_id: int
    quantity: int
    unit_price_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order as locked or as written; renders as `OrderOut`."""

    id: uuid.UUID
    status: str
    placed_by_user_id: uuid.UUID | None
    placed_by_api_key_id: uuid.UUID | None
    currency: str
    total_minor: int
    expires_at: datetime
    version: int
    created_at: datetime
    updated_at: datetime
    lines: list[LineRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose orders a caller may touch: None for both means every order."""

    user_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None


async def lock_order(unit: UnitOfWork, order_id: uuid.UUID, owner: Owner) -> OrderRow | None:
    row = await fetch_row(
        unit.conn,
        sql.LOCK_ORDER,
        {"id": order_id, "owner_user": owner.user_id, "owner_key": owner.api_key_id},
    )
    return OrderRow(*row) if row is not None else None


async def lock_expired(unit: UnitOfWork, now: datetime, limit: int) -> list[OrderRow]:
    rows = await fetch_rows(unit.conn, sql.LOCK_EXPIRED_ORDERS, {"now": now, "limit": limit})
    return [OrderRow(*row) for row in rows]


async def _lines(
    unit: UnitOfWork, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[LineRow]]:
    by_order: dict[uuid.UUID, list[LineRow]] = {order_id: [] for order_id in order_ids}
    for row in await fetch_rows(unit.conn, sql.ORDER_LINES, {"ids": list(order_ids)}):
        by_order[row[0]].append(LineRow(*row))
    return by_order


async def move(
    unit: UnitOfWork,
    orders: Sequence[OrderRow],
    action: OrderAction,
    *,
    now: datetime,
    actor_id: uuid.UUID | None,
    stock_reference: str | None = None,
) -> list[OrderRow]:
    """Apply `action` to locked `orders` (all from one status); returns them as written.

    Raises the lifecycle's refusal before writing anything. `stock_reference` names the
    cause in `stock.changed` (default: `order:<id>`, for a single order)."""
    if not orders:
        return []
    steps = [transition(o.status, action, expires_at=o.expires_at, now=now) for o in orders]
    step = steps[0]
    if any(s != step for s in steps):
        raise ValueError("move() takes orders in one status")  # callers lock one status
    lines = await _lines(unit, [o.id for o in orders])
    effect, kind = step.effect, step.movement_kind
    if effect is not None and kind is not None:
        level_ids = (line.stock_level_id for order_lines in lines.values() for line in order_lines)
        edits = stock.StockEdits(await stock.lock(unit, level_ids))
        for order in orders:
            for line in lines[order.id]:
                change = effect(edits.current[line.stock_level_id], line.quantity)
                edits.record(line.stock_level_id, change, reason=step.reason, order_id=order.id)
        await stock.write(
            unit,
            edits,
            cause=kind.value,
            reference=stock_reference or f"order:{orders[0].id}",
            actor_id=actor_id,
        )
    rows = await fetch_rows(
        unit.conn,
        sql.SET_ORDER_STATUS,
        {"status": step.next.value, "now": now, "ids": [o.id for o in orders]},
    )
    written = {row[0]: replace(OrderRow(*row), lines=lines[row[0]]) for row in rows}
    moved = [written[o.id] for o in orders]
    unit.emit(*(order_event(order, order.lines) for order in moved))
    return moved


__all__ = ["LineRow", "OrderRow", "OrderStatus", "Owner", "lock_expired", "lock_order", "move"]
