"""The stock half of an import batch: absolute `on_hand` targets, written through the ledger.

A row's `on_hand` is the count the level must have after the import. The batch moves each
level by `target - current` with one `adjustment` row in `stock_movements` and one
`stock.changed` event, as `POST /v1/stock/adjustments` would, so `shelfwise reconcile`
stays clean; a level already at its target gets neither (re-importing a file is a no-op
for stock). A target under the level's `reserved` units would break
`reserved <= on_hand`: that row is refused whole (its product columns too).

Two phases around the product upsert, in the batch's one transaction, each a fixed
handful of statements whatever the batch size (`inventory/store.py`'s staged SQL):
`check` (before) locks every existing level of the batch in ascending id (the lock order
of every multi-level writer, see `store/sql.py`) and asks the domain
(`domain.set_on_hand`) about each, marking the rows it refuses; `write` (after) creates
the missing levels at their targets (a new level has nothing reserved: the domain has
nothing to refuse) and moves the existing ones.
"""

from __future__ import annotations

import uuid
from typing import Any, Final, LiteralString

from psycopg import AsyncConnection
from psycopg import sql as pgsql

from shelfwise.errors import InsufficientStock
from shelfwise.inventory import domain, store

# Marks the rows the domain refused in the staging relation (by record number).
REFUSE: Final[LiteralString] = """\
UPDATE {rows} AS r SET error = v.error || ' at location ''' || r.location || ''''
  FROM unnest(%(recs)s::int[], %(errors)s::text[]) AS v(rec, error)
 WHERE r.rec = v.rec
"""

# Rows `set_staged_counts` left alone (see `write`).
REFUSE_LATE: Final[LiteralString] = """\
UPDATE {rows} AS r SET error = 'on_hand: ' || r.on_hand || ' is below the units reserved'
                             || ' at location ''' || r.location || ''''
 WHERE r.rec BETWEEN %(lo)s AND %(hi)s AND r.line = ANY(%(lines)s::int[])
"""


def _refusal(level: store.StagedLevel) -> str | None:
    """The domain's answer to "set this level to the row's count"."""
    try:
        domain.set_on_hand(level.counters, level.target)
    except InsufficientStock:
        return f"on_hand: {level.target} is below the {level.counters.reserved} units reserved"
    return None


async def check(conn: AsyncConnection[Any], rows: pgsql.Identifier, lo: int, hi: int) -> int:
    """Lock the batch's existing levels and refuse rows the domain refuses; returns how
    many rows it refused."""
    refused: dict[int, str] = {}
    for level in await store.lock_staged_levels(conn, rows, lo, hi):
        if (error := _refusal(level)) is not None:
            refused[level.rec] = error
    if refused:
        statement = pgsql.SQL(REFUSE).format(rows=rows)
        await conn.execute(statement, {"recs": list(refused), "errors": list(refused.values())})
    return len(refused)


async def write(
    conn: AsyncConnection[Any],
    rows: pgsql.Identifier,
    lo: int,
    hi: int,
    *,
    reference: str,
    actor_id: uuid.UUID | None,
    trace_context: dict[str, str] | None,
) -> tuple[int, int]:
    """Apply the batch's targets (its products exist now); returns levels changed and rows
    refused late (only if another writer created and reserved a product meanwhile: its
    product columns are written, its stock is not)."""
    changed, late = await store.set_staged_counts(
        conn,
        rows,
        lo,
        hi,
        cause="import",
        reference=reference,
        actor_id=actor_id,
        trace_context=trace_context,
    )
    if late:
        statement = pgsql.SQL(REFUSE_LATE).format(rows=rows)
        await conn.execute(statement, {"lo": lo, "hi": hi, "lines": late})
    return changed, len(late)
