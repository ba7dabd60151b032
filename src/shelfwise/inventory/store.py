"""The only writer of `stock_levels` and `stock_movements`, and of `stock.changed` events.

The shape of every stock write, whoever asks (adjustments, transfers, order transitions,
expiry, the CSV import):

1. lock the levels (`lock`, `lock_at`: `FOR UPDATE` in ascending id, the global lock
   order, see `store/sql.py`);
2. ask the domain (`inventory/domain.py`) for each change, through `StockEdits`, which
   feeds each operation the counters the previous one left;
3. `write`: one statement sets the counters and appends the ledger rows; one
   `stock.changed` per level (ascending id, the counters this transaction commits) is
   emitted into the unit of work.

Runs inside a `UnitOfWork` (`store/unit.py`), which owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shelfwise.driverpool import fetch_row, fetch_rows
from shelfwise.events.payloads import stock_changed_event
from shelfwise.inventory.domain import Counters, LevelKey, StockChange
from shelfwise.store import sql
from shelfwise.store.unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class LevelRow:
    """A stock level as read (or as this transaction leaves it); renders as `StockLevelOut`."""

    id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    on_hand: int
    reserved: int
    version: int
    updated_at: datetime

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    @property
    def counters(self) -> Counters:
        return Counters(self.on_hand, self.reserved)

    @property
    def key(self) -> LevelKey:
        return LevelKey(self.id, self.product_id, self.location_id)


@dataclass(frozen=True, slots=True)
class MovementRow:
    """A ledger row as written; renders as `MovementOut`."""

    id: int
    stock_level_id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    kind: str
    on_hand_delta: int
    reserved_delta: int
    reason: str
    reference: str | None
    actor_id: uuid.UUID | None
    order_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class _Pending:
    level: LevelKey
    change: StockChange
    reason: str
    reference: str | None
    order_id: uuid.UUID | None


@dataclass
class StockEdits:
    """Changes to locked levels, in the order asked for."""

    locked: dict[int, LevelRow]
    current: dict[int, Counters] = field(init=False)
    pending: list[_Pending] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = {level_id: row.counters for level_id, row in self.locked.items()}

    def apply(
        self,
        level_id: int,
        operation: Callable[[Counters], StockChange],
        *,
        reason: str,
        reference: str | None = None,
        order_id: uuid.UUID | None = None,
    ) -> StockChange:
        """Run a domain operation on the level's current counters; raises its refusal."""
        change = operation(self.current[level_id])
        self.record(level_id, change, reason=reason, reference=reference, order_id=order_id)
        return change

    def record(
        self,
        level_id: int,
        change: StockChange,
        *,
        reason: str,
        reference: str | None = None,
        order_id: uuid.UUID | None = None,
    ) -> None:
        """Keep a change the domain computed from this level's current counters."""
        if change.before != self.current[level_id]:
            raise ValueError(
                f"level {level_id} is at {self.current[level_id]}, not {change.before}"
            )
        self.current[level_id] = change.after
        self.pending.append(
            _Pending(self.locked[level_id].key, change, reason, reference, order_id)
        )


@dataclass(frozen=True, slots=True)
class WrittenStock:
    levels: dict[int, LevelRow]  # changed levels as committed
    movements: list[MovementRow]  # in the order the changes were applied


async def ensure_level(
    unit: UnitOfWork, product_id: uuid.UUID, location_id: uuid.UUID
) -> tuple[bool, bool]:
    """Create the level if product and location exist; says (product exists, location exists)."""
    row = await fetch_row(
        unit.conn, sql.ENSURE_LEVEL, {"product_id": product_id, "location_id": location_id}
    )
    assert row is not None
    return bool(row[0]), bool(row[1])


async def levels_below(unit: UnitOfWork, threshold: int) -> list[LevelRow]:
    """Levels whose available quantity is under `threshold`, in id order (no lock: a
    report of one snapshot, not a write)."""
    rows = await fetch_rows(unit.conn, sql.LEVELS_BELOW, {"threshold": threshold})
    return [LevelRow(*row) for row in rows]


async def lock(unit: UnitOfWork, level_ids: Iterable[int]) -> dict[int, LevelRow]:
    rows = await fetch_rows(unit.conn, sql.LOCK_LEVELS, {"ids": sorted(set(level_ids))})
    return {row[0]: LevelRow(*row) for row in rows}


async def lock_at(
    unit: UnitOfWork, pairs: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> dict[tuple[uuid.UUID, uuid.UUID], LevelRow]:
    """Lock the levels of (product, location) pairs that exist, in ascending id."""
    if not pairs:
        return {}
    params = {"product_ids": [p for p, _ in pairs], "location_ids": [loc for _, loc in pairs]}
    rows = await fetch_rows(unit.conn, sql.LOCK_LEVELS_AT, params)
    levels = [LevelRow(*row) for row in rows]
    return {(level.product_id, level.location_id): level for level in levels}


async def lock_one_at(unit: UnitOfWork, product_id: uuid.UUID, location_id: uuid.UUID) -> LevelRow:
    """Lock the level of `product_id` at `location_id`, which must exist (`ensure_level`)."""
    return (await lock_at(unit, [(product_id, location_id)]))[(product_id, location_id)]


async def write(
    unit: UnitOfWork,
    edits: StockEdits,
    *,
    cause: str,
    reference: str | None,
    actor_id: uuid.UUID | None,
) -> WrittenStock:
    """Write the counters and ledger rows `edits` computed; emit one `stock.changed` per
    changed level."""
    if not edits.pending:
        return WrittenStock({}, [])
    changed = sorted({p.level.id for p in edits.pending})
    rows = await fetch_rows(
        unit.conn,
        sql.WRITE_LEVELS,
        {
            "ids": changed,
            "on_hands": [edits.current[i].on_hand for i in changed],
            "reserveds": [edits.current[i].reserved for i in changed],
            "actor_id": actor_id,
            "m_level_ids": [p.level.id for p in edits.pending],
            "m_product_ids": [p.level.product_id for p in edits.pending],
            "m_location_ids": [p.level.location_id for p in edits.pending],
            "m_kinds": [p.change.movement.kind.value for p in edits.pending],
            "m_on_hand": [p.change.movement.on_hand_delta for p in edits.pending],
            "m_reserved": [p.change.movement.reserved_delta for p in edits.pending],
            "m_reasons": [p.reason for p in edits.pending],
            "m_references": [p.reference for p in edits.pending],
            "m_order_ids": [p.order_id for p in edits.pending],
        },
    )
    movements = [MovementRow(*row[:12]) for row in rows]
    committed = {row[1]: (row[12], row[13]) for row in rows}  # level id -> version, updated_at
    levels: dict[int, LevelRow] = {}
    for level_id in changed:
        before, after = edits.locked[level_id], edits.current[level_id]
        version, updated_at = committed[level_id]
        levels[level_id] = LevelRow(
            level_id,
            before.product_id,
            before.location_id,
            after.on_hand,
            after.reserved,
            version,
            updated_at,
        )
        unit.emit(
            stock_changed_event(
                stock_level_id=level_id,
                product_id=before.product_id,
                location_id=before.location_id,
                on_hand=after.on_hand,
                reserved=after.reserved,
                level_version=version,
                cause=cause,
                reference=reference,
            )
        )
    return WrittenStock(levels, movements)
