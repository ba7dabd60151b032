"""Set-based product writes: the CSV import's upsert of a batch of staged rows.

The single-product use cases (create, patch, delete) stay in `catalog/service.py` on the
ORM; this is the one statement that writes many products at once, with their
`product.created` / `product.updated` events, whose payload SQL is derived from
`events/payloads.py` (`product_payload_sql`, the same keys as `product_payload`).

The rows come from a staging relation (`imports/staging.py`'s `_rows`: columns `rec`,
`line`, `error`, `sku`, `name`, `description`, `category`, `price_minor`, `currency`);
the batch is `rec` from `lo` to `hi`, rows whose `error` is NULL.
"""

from __future__ import annotations

from typing import Any, Final, LiteralString

from psycopg import AsyncConnection
from psycopg import sql as pgsql
from psycopg.types.json import Jsonb

from shelfwise.events.payloads import EventType, product_payload_sql

# Derived from a constant key list: no input reaches this SQL.
_PAYLOAD: Final = pgsql.SQL(
    product_payload_sql(
        {
            "product_id": "id",
            "sku": "sku",
            "name": "name",
            "description": "description",
            "category": "category",
            "price_minor": "price_minor",
            "currency": "currency",
            "version": "version",
        }
    )
)

# One row per SKU (the file's last valid row for it wins), in SKU order (two imports
# insert in the same order). A product whose columns already match is left alone: no new
# version, no event, so re-importing a file changes nothing.
UPSERT_STAGED_PRODUCTS: Final[LiteralString] = """\
WITH batch AS (
    SELECT DISTINCT ON (r.sku) r.sku, r.name, r.description, r.category, r.price_minor,
           r.currency
      FROM {rows} AS r
     WHERE r.rec BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
     ORDER BY r.sku, r.line DESC
), upserted AS (
    INSERT INTO products AS p (sku, name, description, category, price_minor, currency)
    SELECT sku, name, description, category, price_minor, currency FROM batch ORDER BY sku
    ON CONFLICT (sku) DO UPDATE SET
        name = excluded.name, description = excluded.description,
        category = excluded.category, price_minor = excluded.price_minor,
        currency = excluded.currency, version = p.version + 1, updated_at = clock_timestamp()
    WHERE (p.name, p.description, p.category, p.price_minor, p.currency)
        IS DISTINCT FROM (excluded.name, excluded.description, excluded.category,
                          excluded.price_minor, excluded.currency)
    RETURNING p.id, p.sku, p.name, p.description, p.category, p.price_minor,
              p.currency, p.version, (p.xmax = 0) AS inserted
), events AS (
    INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, trace_context)
    SELECT CASE WHEN inserted THEN %(created_type)s ELSE %(updated_type)s END,
           'product', id::text, {payload}, %(trace_context)s::jsonb
      FROM upserted ORDER BY sku
    RETURNING 1
)
SELECT (SELECT count(*) FROM upserted WHERE inserted), (SELECT count(*) FROM events)
"""


async def upsert_staged_products(
    conn: AsyncConnection[Any],
    rows: pgsql.Identifier,
    lo: int,
    hi: int,
    *,
    trace_context: dict[str, str] | None,
) -> tuple[int, int]:
    """Upsert the batch's products in the caller's transaction, with their events;
    returns how many were created and how many updated (the caller wakes the relay)."""
    statement = pgsql.SQL(UPSERT_STAGED_PRODUCTS).format(rows=rows, payload=_PAYLOAD)
    params = {
        "lo": lo,
        "hi": hi,
        "created_type": EventType.PRODUCT_CREATED.value,
        "updated_type": EventType.PRODUCT_UPDATED.value,
        "trace_context": Jsonb(trace_context) if trace_context else None,
    }
    cur = await conn.execute(statement, params)
    row = await cur.fetchone()
    assert row is not None
    created, emitted = int(row[0]), int(row[1])
    return created, emitted - created
