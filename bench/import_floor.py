"""The CSV import's same-work floor: the writes the import must make, and nothing else.

`bench.imports` runs this beside its plain `COPY` and the import itself (issue 14,
docs/decisions/0049). Each variant runs on a fresh scratch database of the `var/bench`
cluster, migrated to head, with the benchmark's locations, and is dropped after:

1. `COPY` of the same CSV into an UNLOGGED staging table (as the import does), then one
   `CREATE TABLE ... AS` typing it: record and line numbers, location resolved, the rows
   whose price is not a plain number marked refused (the benchmark file's only bad rows),
   indexed by record number;
2. set-based SQL only, one statement per batch of `batch` records (or one for the whole
   file), one transaction each, on one or two connections (batches taken in turn from a
   shared counter): the products (the real `products` table with its B-trees, generated
   `tsvector` and GIN index), each stocked row's level created at its target, and one
   `adjustment` ledger row per level whose target is not 0 (what `inventory/store.py`'s
   `CREATE_STAGED_LEVELS` writes, the same columns, kind and reason). With `events`, the
   same statement also writes one `product.created` and one `stock.changed` outbox row
   per row, their payload SQL the import's own (`catalog/store.py`, `inventory/store.py`).
   No Python per row, no refusal report, no progress events, no level locks, no
   SKU look-ups (the products' RETURNING feeds the levels).
3. Checked afterwards (outside the timing): products, levels, ledger rows and events
   are what the staged valid rows ask for, and every level's `on_hand` is its ledger sum.

PostgreSQL CPU is read before the variant's connections close (an exited backend's CPU
time is gone): the whole cluster's (postmaster and all its children, as for the import)
and this database's own backends'.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, LiteralString

import psycopg
from psycopg import sql as pgsql

from bench.run import machine_busy_seconds
from bench.servers import (
    cluster_cpu_seconds,
    database_cpu_seconds,
    drop_database,
    scratch_database,
)
from shelfwise.catalog.store import _PAYLOAD as PRODUCT_PAYLOAD  # the import's payload SQL
from shelfwise.db import libpq_url
from shelfwise.events.payloads import EventType
from shelfwise.inventory.domain import MovementKind
from shelfwise.inventory.store import _STOCK_CHANGED as STOCK_CHANGED_PAYLOAD
from shelfwise.inventory.store import CREATE_WANTED_LEVELS

PREFIX: Final = "shelfwise_bench_floor_"
CAUSE: Final = "import"  # `imports/stock.py`'s cause, as `stock.changed` carries it
REFERENCE: Final = "import:floor"
BIG_BATCH_MEMORY: Final = "SET LOCAL work_mem = '256MB'"  # one batch: its hash joins in memory

CREATE_RAW: Final[LiteralString] = """\
CREATE UNLOGGED TABLE floor_raw (
    rec int GENERATED ALWAYS AS IDENTITY,
    sku text, name text, category text, price_minor text, currency text,
    description text, location text, on_hand text)
"""
COPY_RAW: Final[LiteralString] = (
    "COPY floor_raw (sku, name, category, price_minor, currency, description, location,"
    " on_hand) FROM STDIN (FORMAT csv, HEADER true)"
)
# The staging relation in the import's shape (`imports/staging.py`'s `_rows`: `rec`,
# `line`, `error`, typed cells, `location_id`); one data line per record in this file.
BUILD_ROWS: Final[LiteralString] = """\
CREATE UNLOGGED TABLE floor_rows AS
SELECT r.rec, r.rec + 1 AS line,
       CASE WHEN r.price_minor !~ '^[0-9]{1,9}$' THEN 'price_minor: not a whole number'
            WHEN r.location IS NOT NULL AND l.id IS NULL THEN 'location: unknown'
       END AS error,
       r.sku, r.name, coalesce(r.category, 'general') AS category,
       CASE WHEN r.price_minor ~ '^[0-9]{1,9}$' THEN r.price_minor::int END AS price_minor,
       r.currency, coalesce(r.description, '') AS description, r.location,
       l.id AS location_id, r.on_hand::int AS on_hand
  FROM floor_raw AS r LEFT JOIN locations AS l ON l.code = r.location
"""
INDEX_ROWS: Final[LiteralString] = "CREATE INDEX ON floor_rows (rec)"
ANALYZE_ROWS: Final[LiteralString] = "ANALYZE floor_rows"

# One statement per batch: the products, then the levels of the products it inserted
# (RETURNING, joined back to the batch by SKU in memory), then their ledger rows. The
# levels are the import's own SQL (`CREATE_WANTED_LEVELS`); the products' and the
# ledger's column lists are `catalog/store.py`'s and `inventory/store.py`'s (tests
# check them).
MERGE: Final[LiteralString] = (
    """\
WITH batch AS MATERIALIZED (
    SELECT r.line, r.sku, r.name, r.description, r.category, r.price_minor, r.currency,
           r.location_id, r.on_hand
      FROM floor_rows AS r
     WHERE r.rec BETWEEN %(lo)s AND %(hi)s AND r.error IS NULL
), product AS (
    INSERT INTO products AS p (sku, name, description, category, price_minor, currency)
    SELECT sku, name, description, category, price_minor, currency FROM batch ORDER BY sku
    ON CONFLICT (sku) DO NOTHING
    RETURNING p.id, p.sku, p.name, p.description, p.category, p.price_minor, p.currency,
              p.version
), wanted AS MATERIALIZED (
    SELECT p.id AS product_id, b.location_id, b.on_hand, b.line
      FROM product AS p JOIN batch AS b ON b.sku = p.sku
     WHERE b.location_id IS NOT NULL
)"""
    + CREATE_WANTED_LEVELS  # the import's own levels and `moved`
    + """, ledger AS (
    INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind,
                                 on_hand_delta, reserved_delta, reason, reference, actor_id)
    SELECT m.id, m.product_id, m.location_id, %(kind)s, m.delta, 0,
           'CSV import, line ' || m.line, %(reference)s, NULL
      FROM moved AS m ORDER BY m.id
){events}
SELECT (SELECT count(*) FROM product), (SELECT count(*) FROM created),
       (SELECT count(*) FROM moved)
"""
)
# "floor + events": the import's two outbox rows per stocked row (`product.created`,
# `stock.changed`), payloads from the import's own SQL.
EVENTS: Final = pgsql.SQL("""\
, product_events AS (
    INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, trace_context)
    SELECT %(created_type)s, 'product', id::text, {product_payload}, NULL
      FROM product ORDER BY sku
), stock_events AS (
    INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, trace_context)
    SELECT %(event_type)s, 'stock_level', m.id::text, {stock_payload}, NULL
      FROM moved AS m ORDER BY m.id
)""").format(product_payload=PRODUCT_PAYLOAD, stock_payload=STOCK_CHANGED_PAYLOAD)

EXPECTED: Final[LiteralString] = """\
SELECT count(*) FILTER (WHERE error IS NULL),
       count(*) FILTER (WHERE error IS NULL AND location_id IS NOT NULL),
       count(*) FILTER (WHERE error IS NULL AND location_id IS NOT NULL AND on_hand <> 0)
  FROM floor_rows
"""
WRITTEN: Final[LiteralString] = """\
SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM stock_levels),
       (SELECT count(*) FROM stock_movements), (SELECT count(*) FROM outbox_events),
       (SELECT count(*) FROM stock_levels AS s
          LEFT JOIN (SELECT stock_level_id, sum(on_hand_delta) AS total
                       FROM stock_movements GROUP BY stock_level_id) AS m
            ON m.stock_level_id = s.id
         WHERE s.on_hand <> coalesce(m.total, 0))
"""


@dataclass(frozen=True)
class Variant:
    """`batch` records per statement (0: the whole file in one), on `connections`."""

    batch: int
    connections: int
    events: bool

    @property
    def name(self) -> str:
        size = "all" if self.batch == 0 else str(self.batch)
        return f"{'floor+events' if self.events else 'floor'}-{size}x{self.connections}"


def parse_variants(spec: str) -> list[Variant]:
    """`"1000x2,allx1,events-1000x2"`: batch size (or `all`) x connections, `events-` for
    the variant with the outbox rows."""
    out = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        match = re.fullmatch(r"(events-)?(all|[1-9][0-9]*)x([12])", item)
        if match is None:
            raise ValueError(f"floor variant {item!r}: want [events-](N|all)x(1|2)")
        events, size, connections = match.groups()
        batch = 0 if size == "all" else int(size)
        if batch == 0 and connections != "1":
            raise ValueError(f"floor variant {item!r}: one batch runs on one connection")
        out.append(Variant(batch, int(connections), events is not None))
    return out


def merge_statement(events: bool) -> pgsql.Composed:
    return pgsql.SQL(MERGE).format(events=EVENTS if events else pgsql.SQL(""))


def batch_bounds(records: int, batch: int) -> list[tuple[int, int]]:
    """Record ranges (1-based, inclusive) of `batch` records each; 0: one range."""
    if batch == 0:
        return [(1, records)]
    return [(lo, min(lo + batch - 1, records)) for lo in range(1, records + 1, batch)]


async def _stage(conn: psycopg.AsyncConnection[Any], path: Path) -> int:
    async with conn.transaction():
        await conn.execute(CREATE_RAW)
        async with conn.cursor() as cur, cur.copy(COPY_RAW) as copy:
            with path.open("rb") as src:
                while chunk := src.read(1 << 20):
                    await copy.write(chunk)
        await conn.execute("SET LOCAL work_mem = '64MB'")
        await conn.execute(BUILD_ROWS)
        await conn.execute(INDEX_ROWS)
        await conn.execute(ANALYZE_ROWS)
        found = await (await conn.execute("SELECT max(rec) FROM floor_rows")).fetchone()
    assert found is not None
    return int(found[0] or 0)


async def _merge(
    conns: list[psycopg.AsyncConnection[Any]], bounds: list[tuple[int, int]], events: bool
) -> tuple[int, int, int]:
    statement = merge_statement(events)
    params: dict[str, Any] = {
        "kind": MovementKind.ADJUSTMENT.value,  # as `set_staged_counts`
        "reference": REFERENCE,
        "cause": CAUSE,
        "created_type": EventType.PRODUCT_CREATED.value,
        "event_type": EventType.STOCK_CHANGED.value,
    }
    pending = iter(bounds)
    totals = [0, 0, 0]

    async def run(conn: psycopg.AsyncConnection[Any]) -> None:
        for lo, hi in pending:  # shared: each connection takes the next batch
            async with conn.transaction():
                if len(bounds) == 1:
                    await conn.execute(BIG_BATCH_MEMORY)
                cur = await conn.execute(statement, {**params, "lo": lo, "hi": hi})
                row = await cur.fetchone()
            assert row is not None
            for i, n in enumerate(row):
                totals[i] += int(n)

    await asyncio.gather(*(run(conn) for conn in conns))
    return totals[0], totals[1], totals[2]


async def _variant(url: str, name: str, path: Path, variant: Variant) -> dict[str, Any]:
    conns = [
        await psycopg.AsyncConnection.connect(libpq_url(url), autocommit=True)
        for _ in range(variant.connections)
    ]
    try:
        await conns[0].execute("CHECKPOINT")  # what ran before is not this variant's to write
        busy, cluster, own = (
            machine_busy_seconds(),
            cluster_cpu_seconds(),
            database_cpu_seconds(name),
        )
        started = time.perf_counter()
        records = await _stage(conns[0], path)
        staged = time.perf_counter()
        written = await _merge(conns, batch_bounds(records, variant.batch), variant.events)
        finished = time.perf_counter()
        pg_cpu = cluster_cpu_seconds() - cluster  # before the backends exit
        own_cpu = database_cpu_seconds(name) - own
        busy = machine_busy_seconds() - busy
        expected = await (await conns[0].execute(EXPECTED)).fetchone()
        counted = await (await conns[0].execute(WRITTEN)).fetchone()
    finally:
        for conn in conns:
            await conn.close()
    assert expected is not None
    assert counted is not None
    valid, stocked, moved = (int(n) for n in expected)
    products, levels, movements, outbox, off_ledger = (int(n) for n in counted)
    events = valid + moved if variant.events else 0
    return {
        "variant": variant.name,
        "batch": variant.batch or records,
        "connections": variant.connections,
        "events": variant.events,
        "records": records,
        "seconds": round(finished - started, 2),
        "staging_s": round(staged - started, 2),
        "merge_s": round(finished - staged, 2),
        "rows_per_s": round(records / (finished - started)),
        "merge_rows_per_s": round(records / (finished - staged)),
        "postgres_cpu_s": round(pg_cpu, 1),
        "postgres_cpu_us_per_row": round(pg_cpu / records * 1e6, 1),
        "database_backends_cpu_s": round(own_cpu, 1),
        "machine_busy_cpu_s": round(busy, 1),
        "written": {
            "products": products,
            "stock_levels": levels,
            "stock_movements": movements,
            "outbox_events": outbox,
        },
        "statements_said": dict(zip(("products", "levels", "moved"), written, strict=True)),
        "expected": {"valid": valid, "stocked": stocked, "moved": moved, "events": events},
        "levels_off_ledger": off_ledger,
        "check_ok": (products, levels, movements, outbox, off_ledger)
        == (valid, stocked, moved, events, 0)
        and written == (valid, stocked, moved),
    }


def run_variant(
    server: str, path: Path, variant: Variant, locations: tuple[str, ...]
) -> dict[str, Any]:
    """One variant on its own scratch database (migrated, the locations inserted; dropped
    after, whatever the exit)."""
    name, url = scratch_database(server, PREFIX)
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            for code in locations:
                conn.execute(
                    "INSERT INTO locations (code, name) VALUES (%s, %s)", (code, f"Bench {code}")
                )
        return asyncio.run(_variant(url, name, path, variant))
    finally:
        drop_database(server, name)


def floor(
    server: str,
    path: Path,
    variants: list[Variant],
    locations: tuple[str, ...],
    *,
    copy_rows_per_s: float,
) -> list[dict[str, Any]]:
    """Every variant in turn, each with its ratio to the plain COPY of the same run."""
    results = []
    for variant in variants:
        result = run_variant(server, path, variant, locations)
        result["vs_plain_copy"] = round(result["rows_per_s"] / copy_rows_per_s, 3)
        results.append(result)
    return results
