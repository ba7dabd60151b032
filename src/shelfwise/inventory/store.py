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
from typing import Any, Final, LiteralString

from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from shelfwise.driverpool import fetch_row, fetch_rows
from shelfwise.events.payloads import EventType, stock_changed_event, stock_changed_payload_sql
from shelfwise.inventory.domain import Counters, LevelKey, MovementKind, StockChange
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


# -- set-based: absolute counts from a staging relation (the CSV import) ---------------
#
# The import's merge writes up to a batch of levels per statement, so it cannot build a
# `StockEdits` per level in Python (a million `StockChange`s and payload dicts). These
# statements keep the shape above: levels locked in ascending id first
# (`lock_staged_levels`, whose rows the caller checks against `domain.set_on_hand`),
# then counters, ledger rows and `stock.changed` events in one statement
# (`set_staged_counts`), the payload SQL derived from `events/payloads.py`. The relation
# (`imports/staging.py`'s `_rows`) has `rec`, `line`, `error`, `sku`, `location_id`,
# `on_hand` (the target); a batch is `rec` from `lo` to `hi`, rows whose `error` is NULL.

LOCK_STAGED_LEVELS: Final[LiteralString] = """\
SELECT r.rec, r.on_hand, s.on_hand, s.reserved
  FROM {rows} AS r JOIN products AS p ON p.sku = r.sku
  JOIN stock_levels AS s ON s.product_id = p.id AND s.location_id = r.location_id
 WHERE r.rec BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
 ORDER BY s.id
   FOR UPDATE OF s
"""

_STOCK_CHANGED: Final = pgsql.SQL(  # derived from a constant key list: no input reaches this SQL
    stock_changed_payload_sql(
        {
            "stock_level_id": "m.id",
            "product_id": "m.product_id",
            "location_id": "m.location_id",
            "on_hand": "m.on_hand",
            "reserved": "m.reserved",
            "available": "m.on_hand - m.reserved",
            "level_version": "m.version",
            "cause": "%(cause)s::text",
            "reference": "%(reference)s::text",
        }
    )
)

# What every staged stock write appends to `moved` (id, product_id, location_id, on_hand,
# reserved, version, delta, line): one ledger row and one `stock.changed` per level.
_LEDGER_AND_EVENTS: Final = pgsql.SQL("""\
, ledger AS (
    INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind,
                                 on_hand_delta, reserved_delta, reason, reference, actor_id)
    SELECT m.id, m.product_id, m.location_id, %(kind)s, m.delta, 0,
           'CSV import, line ' || m.line, %(reference)s, %(actor_id)s
      FROM moved AS m ORDER BY m.id
), events AS (
    INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, trace_context)
    SELECT %(event_type)s, 'stock_level', m.id::text, {payload}, %(trace_context)s::jsonb
      FROM moved AS m ORDER BY m.id
)""").format(payload=_STOCK_CHANGED)

# The levels of the batch that do not exist yet (products this batch created, or new
# locations of existing ones) are created at their target, with the ledger row and the
# event that explain it: one row written instead of an insert at 0 and an update. A
# target of 0 creates the level and moves nothing. `wanted` is read once (one SKU probe
# per row); the created levels find their row again by joining it (in memory), not by
# looking their product up a second time. Also says how many levels the batch wants
# and how many it created: when it created them all, no level of the batch existed
# before and `SET_STAGED_COUNTS` has nothing to do.
# The batch's missing levels, created at their target from `wanted` (product_id,
# location_id, on_hand, line), and `moved`: those created with stock, which the ledger
# rows and events read. The import's same-work floor (bench/import_floor.py) creates its
# levels with this same text.
CREATE_WANTED_LEVELS: Final[LiteralString] = """\
, created AS (
    INSERT INTO stock_levels AS s (product_id, location_id, on_hand)
    SELECT product_id, location_id, on_hand FROM wanted ORDER BY product_id, location_id
    ON CONFLICT (product_id, location_id) DO NOTHING
    RETURNING s.id, s.product_id, s.location_id, s.on_hand, s.reserved, s.version
), moved AS (
    SELECT c.id, c.product_id, c.location_id, c.on_hand, c.reserved, c.version,
           c.on_hand AS delta, w.line
      FROM created AS c JOIN wanted AS w
        ON w.product_id = c.product_id AND w.location_id = c.location_id
     WHERE c.on_hand <> 0
)"""
# Constants only (`LiteralString`), so the concatenation takes no input (S608).
CREATE_STAGED_LEVELS: Final[LiteralString] = (
    """\
WITH wanted AS MATERIALIZED (
    SELECT p.id AS product_id, r.location_id, r.on_hand, r.line
      FROM {rows} AS r JOIN products AS p ON p.sku = r.sku
     WHERE r.rec BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL AND r.location_id IS NOT NULL
)"""  # noqa: S608
    + CREATE_WANTED_LEVELS
    + """{ledger_and_events}
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM created),
       (SELECT count(*) FROM wanted)
"""
)

# `target` locks again (the caller's `lock_staged_levels` holds most of these already;
# the levels of products this batch created are new) and is read whole by the last
# SELECT, so every level is locked whether or not it moves. A target under `reserved`
# is left alone and its line returned: only a product another transaction created and
# reserved between the caller's check and this statement can get here.
SET_STAGED_COUNTS: Final[LiteralString] = """\
WITH target AS MATERIALIZED (
    SELECT s.id, s.on_hand, s.reserved, r.on_hand AS goal, r.line
      FROM {rows} AS r JOIN products AS p ON p.sku = r.sku
      JOIN stock_levels AS s ON s.product_id = p.id AND s.location_id = r.location_id
     WHERE r.rec BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
     ORDER BY s.id
       FOR UPDATE OF s
), moved AS (
    UPDATE stock_levels AS s
       SET on_hand = t.goal, version = s.version + 1, updated_at = now()
      FROM target AS t
     WHERE s.id = t.id AND t.goal <> t.on_hand AND t.goal >= t.reserved
    RETURNING s.id, s.product_id, s.location_id, s.on_hand, s.reserved, s.version,
              s.on_hand - t.on_hand AS delta, t.line
){ledger_and_events}
SELECT (SELECT count(*) FROM moved),
       (SELECT coalesce(array_agg(line ORDER BY line), '{{}}') FROM target
         WHERE goal < reserved AND goal <> on_hand)
"""


@dataclass(frozen=True, slots=True)
class StagedLevel:
    """A locked level and the row that sets it: (`rec`, target, counters now)."""

    rec: int
    target: int
    counters: Counters


async def lock_staged_levels(
    conn: AsyncConnection[Any], rows: pgsql.Identifier, lo: int, hi: int
) -> list[StagedLevel]:
    """Lock the batch's existing levels (ascending id) and return their counters."""
    cur = await conn.execute(pgsql.SQL(LOCK_STAGED_LEVELS).format(rows=rows), {"lo": lo, "hi": hi})
    return [
        StagedLevel(rec, target, Counters(on_hand, reserved))
        for rec, target, on_hand, reserved in await cur.fetchall()
    ]


async def set_staged_counts(
    conn: AsyncConnection[Any],
    rows: pgsql.Identifier,
    lo: int,
    hi: int,
    *,
    cause: str,
    reference: str,
    actor_id: uuid.UUID | None,
    trace_context: dict[str, str] | None,
) -> tuple[int, list[int]]:
    """Move each level of the batch to its row's target (creating it at the target if
    missing) with one `adjustment` ledger row and one `stock.changed` event (none when
    already there; the products must exist by now); returns the levels moved and the
    lines left alone because their target is under `reserved`. The caller wakes the
    relay after its commit."""
    params = {
        "lo": lo,
        "hi": hi,
        "kind": MovementKind.ADJUSTMENT.value,  # what `domain.set_on_hand` records
        "cause": cause,
        "reference": reference,
        "actor_id": actor_id,
        "event_type": EventType.STOCK_CHANGED.value,
        "trace_context": Jsonb(trace_context) if trace_context else None,
    }
    parts = {"rows": rows, "ledger_and_events": _LEDGER_AND_EVENTS}
    cur = await conn.execute(pgsql.SQL(CREATE_STAGED_LEVELS).format(**parts), params)
    row = await cur.fetchone()
    assert row is not None
    new_moved, created, wanted = (int(n) for n in row)
    if created == wanted:  # every level of the batch is new: none to lock and move
        return new_moved, []
    cur = await conn.execute(pgsql.SQL(SET_STAGED_COUNTS).format(**parts), params)
    moved = await cur.fetchone()
    assert moved is not None
    return new_moved + int(moved[0]), list(moved[1])
