"""Placing an order, written against the driver: the hottest write in the system.

The rules are the ones `orders.service` states (one location, all-or-nothing, lock order,
ledger + outbox in the same transaction); only the means differ. Each step is one named
statement of `orders/store.py` run on the unit's psycopg connection, so a one-line order
with a location costs two statements after the idempotency claim:

1. the conditional UPDATE that reserves the line, joined to the product for its price
   (`RESERVE_AT_LOCATION[_CLAIMED]`), queued with BEGIN and the claim by
   `queue_fast_reservation`;
2. one INSERT ... WITH that writes the order, its lines, the ledger rows and the outbox
   events (`WRITE_ORDER`), queued with the idempotency record and COMMIT.

Queued statements travel in batches, one query each (`batches.py`, docs/decisions/0035
and 0041): two round trips for the whole order, BEGIN + claim + reservation, then order
+ record + COMMIT. The payloads and the response are built here, in Python, between
the two: they need the price and the level's counters.

Anything the fast path cannot decide alone (another location, several lines, an unknown
product, too little stock) goes through the general path below, which reads
availability first and explains a refusal line by line (one round trip per statement).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, Rollback

from shelfwise.batches import Batch, Pending, forget_prepared
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
from shelfwise.orders.store import (
    AVAILABILITY,
    LOCATION_EXISTS,
    RESERVE_AT_LOCATION,
    RESERVE_AT_LOCATION_CLAIMED,
    RESERVE_LEVEL,
    WRITE_ORDER,
)
from shelfwise.store.unit import UnitOfWork

NEW_ORDER_VERSION = 1


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
    at: datetime  # the database's clock when the line was reserved


@dataclass(frozen=True, slots=True)
class FastReservation:
    """The fast path's reservation, queued but not yet read."""

    pending: Pending
    product_id: uuid.UUID
    location_id: uuid.UUID
    quantity: int


def batch_of(unit: UnitOfWork) -> Batch:
    if unit.batch is None:
        raise ValueError("placement runs in a batched unit: run_unit(..., batched=True)")
    return unit.batch


def queue_fast_reservation(
    unit: UnitOfWork,
    quantities: Mapping[uuid.UUID, int],
    location_id: uuid.UUID | None,
    *,
    claim: Mapping[str, str] | None,
) -> FastReservation | None:
    """Queue the one-line reservation when the order is the fast path's (one line, a
    location), else None. With `claim` (the idempotency claim's parameters, queued just
    before), the statement reserves only under the claim (`RESERVE_AT_LOCATION_CLAIMED`)."""
    if location_id is None or len(quantities) != 1:
        return None
    ((product_id, quantity),) = quantities.items()
    params = {"product_id": product_id, "location_id": location_id, "quantity": quantity}
    batch = batch_of(unit)
    if claim is None:
        pending = batch.queue(RESERVE_AT_LOCATION, params)
    else:
        pending = batch.queue(RESERVE_AT_LOCATION_CLAIMED, {**params, **claim})
    return FastReservation(pending, product_id, location_id, quantity)


async def place(
    unit: UnitOfWork,
    quantities: dict[uuid.UUID, int],
    location_id: uuid.UUID | None,
    *,
    placer: Principal,
    expires_at: datetime,
    fast: FastReservation | None = None,
) -> PlacedOrder:
    """Reserve every line at one location and write the order. Runs inside an open
    transaction on `unit.conn`; raises (and the caller rolls back) when nothing can be
    placed. `fast`: the reservation `queue_fast_reservation` queued for this order."""
    batch = batch_of(unit)
    if fast is None:
        fast = queue_fast_reservation(unit, quantities, location_id, claim=None)
    reserved = await _fast_result(fast) if fast is not None else None
    if reserved is None:
        # The general path reads as it goes, on the connection itself: what is still
        # queued (BEGIN at least) must reach the server first.
        await batch.send()
        reserved = await _reserve_general(unit.conn, quantities, location_id)
    placed = _write(batch, reserved, placer=placer, expires_at=expires_at)
    unit.mark_events_written()  # WRITE_ORDER inserts them: the unit wakes the relay
    return placed


async def _fast_result(fast: FastReservation) -> list[_Reserved] | None:
    """None when the single statement could not reserve: the general path says why."""
    row = await fast.pending.fetchone()
    if row is None:
        return None
    level_id, on_hand, reserved, version, price, currency, at = row
    line = PlacedLine(fast.product_id, fast.location_id, level_id, fast.quantity, price, currency)
    return [_Reserved(line, on_hand, reserved, version, at)]


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
    if reserved is None:  # psycopg may have deallocated every prepared statement
        forget_prepared(conn)
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
        _, on_hand, level_reserved, version, at = row
        price, currency = prices[level.product_id]
        line = PlacedLine(
            level.product_id, level.location_id, level.stock_level_id, quantity, price, currency
        )
        reserved.append(_Reserved(line, on_hand, level_reserved, version, at))
    return reserved


def _write(
    batch: Batch,
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
    placed_at = max(r.at for r in reserved)
    # Queued, not read: nothing comes back that Python does not already know.
    batch.queue(
        WRITE_ORDER,
        {
            "id": order_id,
            "currency": currency,
            "total_minor": total,
            "expires_at": expires_at,
            "user_id": user_id,
            "api_key_id": api_key_id,
            "actor_id": user_id,
            "version": NEW_ORDER_VERSION,
            "placed_at": placed_at,
            "lines": json.dumps([_line_record(line) for line in lines]),
            "events": json.dumps([_event_record(event) for event in events]),
        },
    )
    return PlacedOrder(
        id=order_id,
        currency=currency,
        total_minor=total,
        expires_at=expires_at,
        placed_by_user_id=user_id,
        placed_by_api_key_id=api_key_id,
        lines=lines,
        version=NEW_ORDER_VERSION,
        created_at=placed_at,
        updated_at=placed_at,
    )


def _event_record(event: Event) -> dict[str, Any]:
    # Field by field: `dataclasses.asdict` deep-copies the payload, ~3 % of an order.
    return {
        "type": event.type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "payload": event.payload,
        "version": event.version,
        "trace_context": event.trace_context,
    }


def _line_record(line: PlacedLine) -> dict[str, Any]:
    return {
        "stock_level_id": line.stock_level_id,
        "product_id": str(line.product_id),
        "location_id": str(line.location_id),
        "quantity": line.quantity,
        "unit_price_minor": line.unit_price_minor,
    }
