"""The stock half of an import batch: absolute `on_hand` targets, written through the ledger.

A row's `on_hand` is the count the level must have after the import. The batch moves each
level by `target - current` with one `adjustment` row in `stock_movements` and one
`stock.changed` event, exactly as `POST /v1/stock/adjustments` would, so `shelfwise
reconcile` stays clean; a level already at its target gets neither (re-importing a file
is a no-op for stock). A target under the level's `reserved` units would break
`reserved <= on_hand`: that row is refused whole (its product columns too), never
half-written.

Two phases around the product upsert, in the batch's one transaction:
`check` (before) resolves location codes, creates missing levels of existing products and
locks every level the batch touches in ascending id order (the lock order of every
multi-level writer, see `store/sql.py`), then refuses the rows it cannot
apply; `write` (after) creates the levels of the new products and applies the rest. A
handful of set-based statements per batch, whatever its size.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import InsufficientStock
from shelfwise.imports.parser import BadRow, ImportRow
from shelfwise.inventory import domain, store
from shelfwise.inventory.domain import Counters
from shelfwise.store.unit import borrowed_unit

LOCATIONS_SQL = text("SELECT code, id FROM locations WHERE code = ANY(CAST(:codes AS text[]))")

# Levels of products that exist already; ordered so two imports insert in the same order.
ENSURE_LEVELS_SQL = text(
    """
    INSERT INTO stock_levels (product_id, location_id)
    SELECT p.id, v.location_id
    FROM unnest(CAST(:skus AS text[]), CAST(:locations AS uuid[])) AS v(sku, location_id)
    JOIN products p ON p.sku = v.sku
    ORDER BY p.id, v.location_id
    ON CONFLICT (product_id, location_id) DO NOTHING
    """
)

LOCK_LEVELS_SQL = text(
    """
    SELECT p.sku, s.location_id, s.id, s.on_hand, s.reserved
    FROM unnest(CAST(:skus AS text[]), CAST(:locations AS uuid[])) AS v(sku, location_id)
    JOIN products p ON p.sku = v.sku
    JOIN stock_levels s ON s.product_id = p.id AND s.location_id = v.location_id
    ORDER BY s.id
    FOR UPDATE OF s
    """
)

Pair = tuple[str, uuid.UUID]  # (sku, location id)


@dataclass(frozen=True, slots=True)
class Level:
    id: int
    on_hand: int
    reserved: int


@dataclass
class StockCheck:
    """What `check` found: rows to keep, rows refused, and the levels it locked."""

    rows: list[ImportRow] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    locations: dict[str, uuid.UUID] = field(default_factory=dict)
    levels: dict[Pair, Level] = field(default_factory=dict)


def _pairs(pairs: list[Pair]) -> dict[str, list[object]]:
    return {"skus": [sku for sku, _ in pairs], "locations": [loc for _, loc in pairs]}


async def _lock(session: AsyncSession, pairs: list[Pair]) -> dict[Pair, Level]:
    if not pairs:
        return {}
    rows = await session.execute(LOCK_LEVELS_SQL, _pairs(pairs))
    return {(sku, loc): Level(id_, on_hand, reserved) for sku, loc, id_, on_hand, reserved in rows}


def _refusal(row: ImportRow, level: Level | None) -> str | None:
    """The domain's answer to "set this level to the row's count", as a report line."""
    assert row.on_hand is not None
    if level is None:
        return None
    try:
        domain.set_on_hand(Counters(level.on_hand, level.reserved), row.on_hand)
    except InsufficientStock:
        return (
            f"on_hand: {row.on_hand} is below the {level.reserved} units reserved "
            f"at location {row.location!r}"
        )
    return None


async def check(session: AsyncSession, rows: list[ImportRow]) -> StockCheck:
    result = StockCheck()
    codes = sorted({r.location for r in rows if r.location is not None})
    if codes:
        found = await session.execute(LOCATIONS_SQL, {"codes": codes})
        result.locations = {code: id_ for code, id_ in found}
    pairs = [
        (r.product["sku"], result.locations[r.location])
        for r in rows
        if r.location is not None and r.location in result.locations
    ]
    if pairs:
        await session.execute(ENSURE_LEVELS_SQL, _pairs(pairs))
        result.levels = await _lock(session, pairs)
    for row in rows:
        error = None
        if row.location is not None:
            location = result.locations.get(row.location)
            if location is None:
                error = f"location: no location with code {row.location!r}"
            else:
                error = _refusal(row, result.levels.get((row.product["sku"], location)))
        if error is None:
            result.rows.append(row)
        else:
            result.bad.append(BadRow(row.line, error))
    return result


async def write(
    session: AsyncSession, checked: StockCheck, *, reference: str, actor_id: uuid.UUID | None
) -> tuple[int, list[BadRow]]:
    """Apply the checked rows (products now exist); returns levels changed and rows that
    turned out not to fit after all (only if another writer raced us, see below)."""
    stocked = [r for r in checked.rows if r.location is not None]
    pairs = [(r.product["sku"], checked.locations[str(r.location)]) for r in stocked]
    new = [p for p in pairs if p not in checked.levels]
    levels = dict(checked.levels)
    if new:  # levels of products this batch created: nobody else can see them yet
        await session.execute(ENSURE_LEVELS_SQL, _pairs(new))
        levels.update(await _lock(session, new))
    late: list[BadRow] = []
    targets: list[tuple[ImportRow, Level]] = []
    for row, pair in zip(stocked, pairs, strict=True):
        if (error := _refusal(row, levels[pair])) is not None:
            # A product committed by someone else between `check` and the upsert, with
            # a reservation already: its product columns are written, its stock is not.
            late.append(BadRow(row.line, error))
        else:
            targets.append((row, levels[pair]))
    if not targets:
        return 0, late
    # The stock writer (inventory/store.py) writes the counters, the ledger rows and the
    # `stock.changed` events, in this transaction (the levels are locked already).
    async with borrowed_unit(session) as unit:
        edits = store.StockEdits(await store.lock(unit, {level.id for _, level in targets}))
        for row, level in targets:
            change = domain.set_on_hand(edits.current[level.id], int(row.on_hand or 0))
            if change is not None:
                reason = f"CSV import, line {row.line}"
                edits.record(level.id, change, reason=reason, reference=reference)
        written = await store.write(
            unit, edits, cause="import", reference=reference, actor_id=actor_id
        )
    return len(written.levels), late
