"""Placing an order, written against the driver: the hottest write in the system.

The rules are the ones `orders.service` states (one location, all-or-nothing, lock order,
ledger + outbox in the same transaction); only the means differ. Each step is one fixed
SQL string run on the psycopg connection under the session's transaction, so a one-line
order with a location costs two statements after the idempotency check:

1. the conditional UPDATE that reserves the line, joined to the product for its price;
2. one INSERT ... WITH that writes the order, its lines, the ledger rows and the outbox
   events (the caller marks the session, so the relay is woken after the commit).

Through SQLAlchemy's ORM the same work was ~12 statements and most of the request's CPU
(docs/decisions/0013-order-placement-on-the-driver.md). Anything the fast path cannot
decide alone (another location, several lines, an unknown product, too little stock)
goes through the general path below, which reads availability first and explains a
refusal line by line.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Rollback

from shelfwise.driverpool import fetch_row, fetch_rows
from shelfwise.errors import InsufficientStock
from shelfwise.events.outbox import Event
from shelfwise.events.payloads import EventType, order_payload, stock_changed_event
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.inventory.domain import LevelAvailability
from shelfwise.inventory.errors import LocationNotFound
from shelfwise.observability.tracing import ORDER_ID, annotate
from shelfwise.orders.allocation import Candidate, best_availability, candidate_locations
from shelfwise.orders.errors import MixedCurrencies, UnknownProducts
from shelfwise.orders.models import OrderStatus
from shelfwise.store.unit import UnitOfWork

# The one-line fast path: reserve at (product, location) if enough is unreserved.
RESERVE_AT_LOCATION = """\
UPDATE stock_levels AS s
   SET reserved = s.reserved + %(quantity)s, version = s.version + 1, updated_at = now()
  FROM products AS p
 WHERE s.product_id = %(product_id)s AND s.location_id = %(location_id)s
   AND p.id = s.product_id AND s.on_hand - s.reserved >= %(quantity)s
RETURNING s.id, s.on_hand, s.reserved, s.version, p.price_minor, p.currency
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
RETURNING id, on_hand, reserved, version
"""

LOCATION_EXISTS = "SELECT 1 FROM locations WHERE id = %s"

# Order, lines, ledger and events in one statement. The lines' foreign key to the order
# is checked at the end of the statement, when the order row exists.
WRITE_ORDER = """\
WITH placed AS (
    INSERT INTO orders (id, status, currency, total_minor, expires_at,
                        placed_by_user_id, placed_by_api_key_id)
    VALUES (%(id)s, 'reserved', %(currency)s, %(total_minor)s, %(expires_at)s,
            %(user_id)s, %(api_key_id)s)
    RETURNING version, created_at, updated_at
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
), events AS (
    INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, version,
                               trace_context)
    SELECT e->>'type', e->>'aggregate_type', e->>'aggregate_id', e->'payload',
           (e->>'version')::smallint, nullif(e->'trace_context', 'null')
      FROM jsonb_array_elements(%(events)s::jsonb) WITH ORDINALITY AS events(e, n)
     ORDER BY n
    RETURNING 1
)
SELECT version, created_at, updated_at, (SELECT count(*) FROM events) FROM placed
"""


@dataclass(frozen=True, slots=True)
class PlacedLine:
    product_id: uuid.UUID
    location_id: uuid.UUID
    stock_level_id: int
    quantity: int
    unit_price_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class PlacedOrder:
    """A just-placed order, shaped like `Order` for rendering (`OrderOut` reads attributes)."""

    id: uuid.UUID
    currency: str
    total_minor: int
    expires_at: datetime
    placed_by_user_id: uuid.UUID | None
    placed_by_api_key_id: uuid.UUID | None
    lines: list[PlacedLine]
    version: int
    created_at: datetime
    updated_at: datetime
    status: str = field(default=OrderStatus.RESERVED.value)


@dataclass(frozen=True, slots=True)
class _Reserved:
    """One reserved line, with its level's counters as this transaction leaves them."""

    line: PlacedLine
    on_hand: int
    reserved: int
    level_version: int


async def place(
    unit: UnitOfWork,
    quantities: dict[uuid.UUID, int],
    location_id: uuid.UUID | None,
    *,
    placer: Principal,
    expires_at: datetime,
) -> PlacedOrder:
    """Reserve every line at one location and write the order. Runs inside an open
    transaction on `conn`; raises (and the caller rolls back) when nothing can be placed."""
    conn = unit.conn
    reserved = None
    if location_id is not None and len(quantities) == 1:
        reserved = await _reserve_one(conn, quantities, location_id)
    if reserved is None:
        reserved = await _reserve_general(conn, quantities, location_id)
    placed = await _write(conn, reserved, placer=placer, expires_at=expires_at)
    unit.mark_events_written()  # WRITE_ORDER inserted them: the unit wakes the relay
    return placed


async def _reserve_one(
    conn: AsyncConnection[Any], quantities: dict[uuid.UUID, int], location_id: uuid.UUID
) -> list[_Reserved] | None:
    """None when the single statement could not reserve: the general path says why."""
    ((product_id, quantity),) = quantities.items()
    row = await fetch_row(
        conn,
        RESERVE_AT_LOCATION,
        {"product_id": product_id, "location_id": location_id, "quantity": quantity},
    )
    if row is None:
        return None
    level_id, on_hand, reserved, version, price, currency = row
    line = PlacedLine(product_id, location_id, level_id, quantity, price, currency)
    return [_Reserved(line, on_hand, reserved, version)]


async def _reserve_general(
    conn: AsyncConnection[Any], quantities: dict[uuid.UUID, int], location_id: uuid.UUID | None
) -> list[_Reserved]:
    prices, levels = await _availability(conn, quantities, location_id)
    no_such_location = (
        location_id is not None
        and not levels
        and await fetch_row(conn, LOCATION_EXISTS, (location_id,)) is None
    )
    if no_such_location:
        raise LocationNotFound(f"No location with id {location_id}")
    candidates = candidate_locations(quantities, levels)
    for index, candidate in enumerate(candidates):
        # A single failed conditional UPDATE changed nothing, and a failure at the last
        # candidate rolls the whole transaction back: a savepoint is needed only between.
        if len(quantities) == 1 or index == len(candidates) - 1:
            reserved = await _reserve_at(conn, quantities, prices, candidate)
        else:
            reserved = await _reserve_or_undo(conn, quantities, prices, candidate)
        if reserved is not None:
            return reserved
    _, fresh = await _availability(conn, quantities, location_id)
    raise InsufficientStock(
        "No single location has enough unreserved stock for every line",
        lines=best_availability(quantities, fresh),
    )


async def _availability(
    conn: AsyncConnection[Any], quantities: dict[uuid.UUID, int], location_id: uuid.UUID | None
) -> tuple[dict[uuid.UUID, tuple[int, str]], list[LevelAvailability]]:
    rows = await fetch_rows(
        conn, AVAILABILITY, {"product_ids": list(quantities), "location_id": location_id}
    )
    prices: dict[uuid.UUID, tuple[int, str]] = {}
    levels: list[LevelAvailability] = []
    for product_id, price, currency, level_id, level_location, available in rows:
        prices[product_id] = (price, currency)
        if level_id is not None:
            levels.append(LevelAvailability(level_id, product_id, level_location, available))
    missing = [str(p) for p in quantities if p not in prices]
    if missing:
        raise UnknownProducts(f"Unknown products: {', '.join(missing)}", product_ids=missing)
    if len({currency for _, currency in prices.values()}) > 1:
        raise MixedCurrencies("Order products priced in one currency per order")
    return prices, levels


async def _reserve_or_undo(
    conn: AsyncConnection[Any],
    quantities: dict[uuid.UUID, int],
    prices: dict[uuid.UUID, tuple[int, str]],
    candidate: Candidate,
) -> list[_Reserved] | None:
    """`_reserve_at` in a savepoint: a shortfall undoes the lines it already reserved."""
    async with conn.transaction():  # nested: SAVEPOINT ... RELEASE / ROLLBACK TO
        reserved = await _reserve_at(conn, quantities, prices, candidate)
        if reserved is None:
            raise Rollback()  # leaves the block, rolled back to the savepoint
    return reserved


async def _reserve_at(
    conn: AsyncConnection[Any],
    quantities: dict[uuid.UUID, int],
    prices: dict[uuid.UUID, tuple[int, str]],
    candidate: Candidate,
) -> list[_Reserved] | None:
    """Reserve every line at one location in ascending level id (the global lock order);
    None as soon as one line falls short."""
    reserved: list[_Reserved] = []
    for level in sorted(candidate.levels.values(), key=lambda lv: lv.stock_level_id):
        quantity = quantities[level.product_id]
        row = await fetch_row(
            conn, RESERVE_LEVEL, {"level_id": level.stock_level_id, "quantity": quantity}
        )
        if row is None:
            return None
        _, on_hand, level_reserved, version = row
        price, currency = prices[level.product_id]
        line = PlacedLine(
            level.product_id, level.location_id, level.stock_level_id, quantity, price, currency
        )
        reserved.append(_Reserved(line, on_hand, level_reserved, version))
    return reserved


async def _write(
    conn: AsyncConnection[Any],
    reserved: Sequence[_Reserved],
    *,
    placer: Principal,
    expires_at: datetime,
) -> PlacedOrder:
    order_id = uuid.uuid4()
    annotate({ORDER_ID: str(order_id)})  # on the request's span, when tracing is on
    lines = [r.line for r in reserved]
    currency = lines[0].currency
    total = sum(line.unit_price_minor * line.quantity for line in lines)
    user_id = placer.user_id
    api_key_id = placer.id if placer.kind is PrincipalKind.API_KEY else None
    payload = order_payload(
        order_id,
        OrderStatus.RESERVED.value,
        currency=currency,
        total_minor=total,
        expires_at=expires_at,
        lines=[(line.product_id, line.location_id, line.quantity) for line in lines],
        placed_by_user_id=user_id,
        placed_by_api_key_id=api_key_id,
    )
    # Same events, same order as every other use case: the levels' `stock.changed` (by
    # level id), then the order's own event.
    events = [
        stock_changed_event(
            stock_level_id=r.line.stock_level_id,
            product_id=r.line.product_id,
            location_id=r.line.location_id,
            on_hand=r.on_hand,
            reserved=r.reserved,
            level_version=r.level_version,
            cause="reserve",
            reference=f"order:{order_id}",
        )
        for r in sorted(reserved, key=lambda r: r.line.stock_level_id)
    ]
    events.append(Event(EventType.ORDER_RESERVED.value, "order", str(order_id), payload))
    row = await fetch_row(
        conn,
        WRITE_ORDER,
        {
            "id": order_id,
            "currency": currency,
            "total_minor": total,
            "expires_at": expires_at,
            "user_id": user_id,
            "api_key_id": api_key_id,
            "actor_id": user_id,
            "lines": json.dumps([_line_record(line) for line in lines]),
            "events": json.dumps([asdict(event) for event in events]),
        },
    )
    assert row is not None
    version, created_at, updated_at, _ = row
    return PlacedOrder(
        id=order_id,
        currency=currency,
        total_minor=total,
        expires_at=expires_at,
        placed_by_user_id=user_id,
        placed_by_api_key_id=api_key_id,
        lines=lines,
        version=version,
        created_at=created_at,
        updated_at=updated_at,
    )


def _line_record(line: PlacedLine) -> dict[str, Any]:
    return {
        "stock_level_id": line.stock_level_id,
        "product_id": str(line.product_id),
        "location_id": str(line.location_id),
        "quantity": line.quantity,
        "unit_price_minor": line.unit_price_minor,
    }
