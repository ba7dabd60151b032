"""The only writer of `orders` and `order_lines`, and of `order.*` events; the SQL of
placing an order lives here, by name, beside the SQL of every later step.

Placing an order is `orders/placement.py` (the algorithm: which location, when to fall
back) over the statements below (`RESERVE_*`, `AVAILABILITY`, `WRITE_ORDER`). Every
later step of an order goes through `move`: lock the orders, ask the lifecycle table
(`orders/lifecycle.py`) what the action does from each order's status, apply its stock
effect to every line through the stock writer (`inventory/store.py`), set the new status
and emit `order.<status>`. Lock order: the order rows first, then their levels in
ascending id, the same in every writer.

Placement sends its statements in batches (`run_unit(..., batched=True)`, `batches.py`):
a statement is queued, and the first read of its rows sends everything queued as one
query, one round trip (docs/decisions/0035, 0041).
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

# -- placing: reserve, then write the order -------------------------------------------

# The one-line fast path: reserve at (product, location) if enough is unreserved.
RESERVE_AT_LOCATION = """\
UPDATE stock_levels AS s
   SET reserved = s.reserved + %(quantity)s, version = s.version + 1, updated_at = now()
  FROM products AS p
 WHERE s.product_id = %(product_id)s AND s.location_id = %(location_id)s
   AND p.id = s.product_id AND s.on_hand - s.reserved >= %(quantity)s
RETURNING s.id, s.on_hand, s.reserved, s.version, p.price_minor, p.currency,
          clock_timestamp()
"""
# The same, sent in one round trip with the idempotency claim (before its answer is
# read), so it must not act for a request the claim refuses: it reserves only if this
# transaction holds the key's advisory lock (re-entrant: true when the claim took it,
# false at once when another request holds it: a retry never queues behind its first
# attempt's row lock) and no response is stored under the key yet (a replay reserves
# nothing). Both conditions are uncorrelated: evaluated once, before any row is locked.
RESERVE_AT_LOCATION_CLAIMED = """\
UPDATE stock_levels AS s
   SET reserved = s.reserved + %(quantity)s, version = s.version + 1, updated_at = now()
  FROM products AS p
 WHERE s.product_id = %(product_id)s AND s.location_id = %(location_id)s
   AND p.id = s.product_id AND s.on_hand - s.reserved >= %(quantity)s
   AND (SELECT pg_try_advisory_xact_lock(hashtextextended(%(claim_lock)s, 0)))
   AND NOT EXISTS (SELECT FROM idempotency_keys
                    WHERE principal = %(principal)s AND key = %(key)s)
RETURNING s.id, s.on_hand, s.reserved, s.version, p.price_minor, p.currency,
          clock_timestamp()
"""

# The general path: prices of every product and the levels that could serve them.
AVAILABILITY = """\
SELECT p.id, p.price_minor, p.currency, s.id, s.location_id, s.on_hand - s.reserved
  FROM products AS p
  LEFT JOIN stock_levels AS s
    ON s.product_id = p.id AND (%(location_id)s::uuid IS NULL OR s.location_id = %(location_id)s)
 WHERE p.id = ANY(%(product_ids)s)
 ORDER BY s.id
"""

RESERVE_LEVEL = """\
UPDATE stock_levels
   SET reserved = reserved + %(quantity)s, version = version + 1, updated_at = now()
 WHERE id = %(level_id)s AND on_hand - reserved >= %(quantity)s
RETURNING id, on_hand, reserved, version, clock_timestamp()
"""

LOCATION_EXISTS = "SELECT 1 FROM locations WHERE id = %s"

# Order, lines, ledger and events in one statement. The lines' foreign key to the order
# is checked at the end of the statement, when the order row exists. Every value is
# given (the order's times are the reservation's `clock_timestamp()`, its version 1), so
# nothing is read back: the statement is queued with the idempotency record and COMMIT.
WRITE_ORDER = """\
WITH placed AS (
    INSERT INTO orders (id, status, currency, total_minor, expires_at,
                        placed_by_user_id, placed_by_api_key_id, version,
                        created_at, updated_at)
    VALUES (%(id)s, 'reserved', %(currency)s, %(total_minor)s, %(expires_at)s,
            %(user_id)s, %(api_key_id)s, %(version)s, %(placed_at)s, %(placed_at)s)
), lines AS (
    SELECT * FROM jsonb_to_recordset(%(lines)s::jsonb) AS l(
        stock_level_id bigint, product_id uuid, location_id uuid, quantity int,
        unit_price_minor bigint)
), order_lines AS (
    INSERT INTO order_lines (order_id, product_id, location_id, stock_level_id, quantity,
                             unit_price_minor, currency)
    SELECT %(id)s, product_id, location_id, stock_level_id, quantity, unit_price_minor,
           %(currency)s
      FROM lines ORDER BY stock_level_id
), ledger AS (
    INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind,
                                 on_hand_delta, reserved_delta, reason, order_id, actor_id)
    SELECT stock_level_id, product_id, location_id, 'reserve', 0, quantity,
           'order reserved', %(id)s, %(actor_id)s
      FROM lines ORDER BY stock_level_id
)
INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, version,
                           trace_context)
SELECT e->>'type', e->>'aggregate_type', e->>'aggregate_id', e->'payload',
       (e->>'version')::smallint, nullif(e->'trace_context', 'null')
  FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS events(e, n)
 ORDER BY n
"""


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
