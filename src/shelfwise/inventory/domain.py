"""The stock rules, with no I/O: counters in, new counters + ledger movements + events out.

A stock level holds two counters: `on_hand` (units in the building) and `reserved` (units
promised to open orders); `available = on_hand - reserved`. Every operation here returns
a `StockChange` (the counters after, the ledger movement that explains them, the
`StockChanged` event to publish) or raises `InsufficientStock` / `InvalidQuantity` when
the change would break `0 <= reserved <= on_hand`. Nothing else decides whether a change
is allowed: `inventory/store.py` and `orders/store.py` load counters under a row lock,
ask these functions, and write what they return. The CHECK constraint on `stock_levels`
stays as the last line of defence (a bug here fails the transaction, never the ledger).

| operation | on_hand | reserved | ledger kind  | refused when             |
| --------- | ------- | -------- | ------------ | ------------------------ |
| receive   | +q      |          | receipt      |                          |
| adjust    | +d      |          | adjustment   | on_hand + d < reserved   |
| reserve   |         | +q       | reserve      | q > available            |
| release   |         | -q       | release      | q > reserved             |
| commit    | -q      | -q       | commit       | q > reserved             |
| restock   | +q      |          | receipt      |                          |
| transfer  | -q / +q |          | transfer_out / transfer_in | q > available at the source |
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from shelfwise.errors import InsufficientStock, InvalidInput


class MovementKind(StrEnum):
    """The kinds of ledger rows (`stock_movements.kind`; a CHECK constraint lists them)."""

    RECEIPT = "receipt"
    ADJUSTMENT = "adjustment"
    RESERVE = "reserve"
    RELEASE = "release"
    COMMIT = "commit"
    TRANSFER_IN = "transfer_in"
    TRANSFER_OUT = "transfer_out"


class InvalidQuantity(InvalidInput):
    code = "validation_failed"
    title = "Quantity is invalid"


@dataclass(frozen=True, slots=True)
class LevelKey:
    """Which stock level: one product at one location."""

    id: int
    product_id: uuid.UUID
    location_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class LevelAvailability:
    """What one level can still promise (placement reads these to choose a location)."""

    stock_level_id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    available: int


@dataclass(frozen=True, slots=True)
class Counters:
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @property
    def valid(self) -> bool:
        return 0 <= self.reserved <= self.on_hand

    def moved(self, movement: Movement) -> Counters:
        return Counters(
            self.on_hand + movement.on_hand_delta, self.reserved + movement.reserved_delta
        )


@dataclass(frozen=True, slots=True)
class Movement:
    """One ledger row's deltas. Summed over a level's rows they give its counters."""

    kind: MovementKind
    on_hand_delta: int
    reserved_delta: int


@dataclass(frozen=True, slots=True)
class StockChanged:
    """The event every change publishes (`stock.changed`, built in events/payloads.py)."""

    counters: Counters
    cause: str


@dataclass(frozen=True, slots=True)
class StockChange:
    before: Counters
    after: Counters
    movement: Movement
    event: StockChanged


def _positive(quantity: int) -> None:
    if quantity <= 0:
        raise InvalidQuantity(f"Quantity must be positive, got {quantity}")


def _change(before: Counters, movement: Movement, cause: str | None = None) -> StockChange:
    after = before.moved(movement)
    # Every refusal is raised by the operations below with a reason; reaching here with
    # broken counters means a rule is missing, so fail loudly rather than write it.
    if not after.valid:  # pragma: no cover - guarded by each operation
        raise AssertionError(f"{movement} would break the invariant on {before}")
    return StockChange(before, after, movement, StockChanged(after, cause or movement.kind.value))


def receive(level: Counters, quantity: int) -> StockChange:
    _positive(quantity)
    return _change(level, Movement(MovementKind.RECEIPT, quantity, 0))


def adjust(
    level: Counters, delta: int, kind: MovementKind = MovementKind.ADJUSTMENT
) -> StockChange:
    """Move `on_hand` by `delta` (a count correction, a receipt, a write-off)."""
    if delta == 0:
        raise InvalidQuantity("An adjustment must move at least one unit")
    if level.on_hand + delta < level.reserved:
        raise InsufficientStock(
            f"Cannot remove {-delta} units: only {level.available} are not reserved",
            lines=[{"requested": -delta, "available": level.available}],
        )
    return _change(level, Movement(kind, delta, 0))


def reserve(level: Counters, quantity: int) -> StockChange:
    _positive(quantity)
    if quantity > level.available:
        raise InsufficientStock(
            f"Cannot reserve {quantity} units: only {level.available} are available",
            lines=[{"requested": quantity, "available": level.available}],
        )
    return _change(level, Movement(MovementKind.RESERVE, 0, quantity))


def _require_reserved(level: Counters, quantity: int, what: str) -> None:
    _positive(quantity)
    if quantity > level.reserved:
        raise InsufficientStock(
            f"Cannot {what} {quantity} units: only {level.reserved} are reserved",
            lines=[{"requested": quantity, "reserved": level.reserved}],
        )


def release(level: Counters, quantity: int) -> StockChange:
    """Give reserved units back to `available` (cancel, expiry)."""
    _require_reserved(level, quantity, "release")
    return _change(level, Movement(MovementKind.RELEASE, 0, -quantity))


def commit(level: Counters, quantity: int) -> StockChange:
    """Reserved units leave the building (an order is confirmed): both counters drop."""
    _require_reserved(level, quantity, "commit")
    return _change(level, Movement(MovementKind.COMMIT, -quantity, -quantity))


def restock(level: Counters, quantity: int) -> StockChange:
    """Committed units come back (a confirmed order is cancelled): a receipt."""
    _positive(quantity)
    return _change(level, Movement(MovementKind.RECEIPT, quantity, 0))


def transfer(source: Counters, destination: Counters, quantity: int) -> tuple[StockChange, ...]:
    """Both legs, source first. Only unreserved units may leave."""
    _positive(quantity)
    if quantity > source.available:
        raise InsufficientStock(
            f"Only {source.available} unreserved units at the source location",
            lines=[{"requested": quantity, "available": source.available}],
        )
    return (
        _change(source, Movement(MovementKind.TRANSFER_OUT, -quantity, 0), "transfer"),
        _change(destination, Movement(MovementKind.TRANSFER_IN, quantity, 0), "transfer"),
    )


def set_on_hand(level: Counters, target: int) -> StockChange | None:
    """An absolute count (a CSV import row): the adjustment that gets there, None when
    the level is already at `target`."""
    if target == level.on_hand:
        return None
    if target < level.reserved:
        raise InsufficientStock(
            f"on_hand: {target} is below the {level.reserved} units reserved",
            lines=[{"requested": target, "reserved": level.reserved}],
        )
    return _change(level, Movement(MovementKind.ADJUSTMENT, target - level.on_hand, 0), "import")
