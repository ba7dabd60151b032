"""The import's staging tables: the file loaded with `COPY`, then judged set-based.

Three UNLOGGED tables per import, named after it (`import_<key>_raw`, `_fix`, `_rows`),
dropped when it ends, failed or not (`drop`). UNLOGGED rather than TEMP: a temporary
table lives on one server connection, and the import's transactions may each run on
another (the pool; pgbouncer in transaction mode); UNLOGGED skips the WAL as TEMP does.

1. `load`: the file, re-written by `parser.CsvToCopy` in a thread, streams into `_raw`
   with `COPY ... FROM STDIN` (cells as text, plus record and line numbers), chunk by
   chunk: never the whole file in memory.
2. `judge`: `CANONICAL` (below) accepts, in SQL, the rows whose cells are already in the
   form `parser.check_row` would leave them; the others (few in a normal file) are read
   back and judged by `check_row` itself, their values or refusal copied into `_fix`.
   So a row is refused exactly when `check_row` refuses it, with its message.
3. `judge` then builds `_rows` (typed values, location resolved, `error` set for
   refused rows: bad cells, a key already used earlier in the file, an unknown location)
   with one `CREATE TABLE ... AS`, indexed by record number for the merge's batches.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Final, LiteralString

from psycopg import AsyncConnection
from psycopg import sql as pgsql
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.db import driver_connection
from shelfwise.imports.parser import CELLS, CsvToCopy, check_row

# The long statements of an import (one COPY of the whole file, one pass over it) get
# more than the service's per-statement timeout; a batch's statements keep it.
LONG_STATEMENT: Final = "SET LOCAL statement_timeout = '15min'"
SORT_MEMORY: Final = "SET LOCAL work_mem = '64MB'"  # the duplicate check's sort, in memory

CREATE_RAW: Final[LiteralString] = """\
CREATE UNLOGGED TABLE {raw} (
    rec int NOT NULL, line int NOT NULL, error text,
    sku text, name text, category text, price_minor text, currency text,
    description text, location text, on_hand text)
"""

CREATE_FIX: Final[LiteralString] = """\
CREATE UNLOGGED TABLE {fix} (
    rec int NOT NULL, line int NOT NULL, error text,
    sku text, name text, category text, price_minor int, currency text,
    description text, location text, on_hand int)
"""

# Python's `str.isspace` characters (what `check_row` strips) and Rust's White_Space
# (what pydantic strips): a cell starting or ending with one is left to `check_row`.
# Tested with `strpos` on the cell's first and last character: PostgreSQL's regex engine
# costs microseconds per row for an unanchored class or a bounded repeat like {0,63}.
_SPACES: Final[LiteralString] = (
    r"E'\t\n\u000b\u000c\r\u001c\u001d\u001e\u001f \u0085\u00a0\u1680\u2000\u2001\u2002"
    r"\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000'"
)
_COUNT: Final[LiteralString] = "'^(0|[1-9][0-9]*)$'"  # a whole number, no sign or padding


def _trimmed(cell: LiteralString) -> LiteralString:
    """SQL: `cell` neither starts nor ends with whitespace (and is not empty)."""
    return (
        "(strpos(" + _SPACES + ", left(" + cell + ", 1)) = 0"
        " AND strpos(" + _SPACES + ", right(" + cell + ", 1)) = 0)"
    )


def _count(cell: LiteralString, most: LiteralString) -> LiteralString:
    """SQL: `cell` is a whole number from 0 to `most`, written plainly (no sign, no padding)."""
    return (
        "(char_length("
        + cell
        + ") <= 10 AND "
        + cell
        + " ~ "
        + _COUNT
        + " AND CASE WHEN "
        + cell
        + " ~ "
        + _COUNT
        + " THEN "
        + cell
        + "::bigint <= "
        + most
        + " ELSE false END)"
    )


# A strict subset of `check_row`'s rules: a row it accepts, `check_row` accepts with the
# same values (so the cells can be cast as they are). Never true for a refused row.
CANONICAL: Final[LiteralString] = (
    "coalesce(r.error IS NULL"
    " AND char_length(r.sku) <= 64 AND r.sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]*$'"
    " AND " + _trimmed("r.name") + " AND char_length(r.name) <= 200"
    " AND "
    + _count("r.price_minor", "2147483647")
    + " AND char_length(r.currency) = 3 AND r.currency ~ '^[A-Z]+$'"
    " AND (r.category IS NULL OR (char_length(r.category) <= 64"
    " AND r.category ~ '^[a-z0-9][a-z0-9 _-]*$' AND right(r.category, 1) <> ' '))"
    " AND (r.description IS NULL"
    " OR (" + _trimmed("r.description") + " AND char_length(r.description) <= 5000))"
    " AND ((r.location IS NULL AND r.on_hand IS NULL)"
    " OR (r.location ~ '^[A-Za-z0-9._-]+$' AND " + _count("r.on_hand", "1000000000") + ")),"
    " false)"
)

SUSPECTS: Final[LiteralString] = (
    "SELECT r.rec, r.line, r.sku, r.name, r.category, r.price_minor, r.currency,"
    " r.description, r.location, r.on_hand FROM {raw} AS r"
    " WHERE r.error IS NULL AND NOT {canonical}"
)

# Typed rows; `error` says why a row is refused. A row's key (SKU, or SKU and location)
# counts only among rows valid so far, and only its first row (by line) keeps it.
BUILD_ROWS: Final[LiteralString] = """\
CREATE UNLOGGED TABLE {rows} AS
WITH judged AS (
    SELECT r.rec, r.line, r.error, r.sku, r.name, coalesce(r.category, 'general') AS category,
           r.price_minor::int AS price_minor, r.currency,
           coalesce(r.description, '') AS description, r.location, r.on_hand::int AS on_hand
      FROM {raw} AS r WHERE {canonical}
    UNION ALL
    SELECT r.rec, r.line, r.error, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
      FROM {raw} AS r WHERE r.error IS NOT NULL
    UNION ALL
    SELECT f.rec, f.line, f.error, f.sku, f.name, f.category, f.price_minor, f.currency,
           f.description, f.location, f.on_hand
      FROM {fix} AS f
), keyed AS (
    SELECT j.*, l.id AS location_id,
           row_number() OVER (PARTITION BY j.error IS NULL, j.sku, j.location
                              ORDER BY j.line) AS nth
      FROM judged AS j LEFT JOIN locations AS l ON l.code = j.location
)
SELECT rec, line, sku, name, category, price_minor, currency, description, location,
       location_id, on_hand,
       CASE WHEN error IS NOT NULL THEN error
            WHEN nth > 1 THEN 'duplicate SKU ''' || sku || ''''
                 || coalesce(' at location ''' || location || '''', '') || ' in this file'
            WHEN location IS NOT NULL AND location_id IS NULL
            THEN 'location: no location with code ''' || location || ''''
       END AS error
  FROM keyed
"""

# What a merged batch left: rows kept and refused, and the refusals in line order.
BATCH_COUNTS: Final[LiteralString] = """\
SELECT count(*) FILTER (WHERE error IS NULL), count(*) FILTER (WHERE error IS NOT NULL)
  FROM {rows} WHERE rec BETWEEN %(lo)s AND %(hi)s
"""
BATCH_ERRORS: Final[LiteralString] = """\
SELECT line, error FROM {rows}
 WHERE rec BETWEEN %(lo)s AND %(hi)s AND error IS NOT NULL ORDER BY line LIMIT %(room)s
"""

# Batches (numbered from 0, `size` records each) holding a SKU that an earlier batch
# holds too (a product stocked in several locations, rows straddling a batch boundary):
# the merge does not overlap such a batch with the one before it.
SHARED_BATCHES: Final[LiteralString] = """\
SELECT DISTINCT (r.rec - 1) / %(size)s
  FROM {rows} AS r
  JOIN (SELECT sku, min(rec) AS first FROM {rows} WHERE sku IS NOT NULL GROUP BY sku) AS f
    ON f.sku = r.sku
 WHERE (r.rec - 1) / %(size)s > (f.first - 1) / %(size)s
"""

INDEX_ROWS: Final[LiteralString] = "CREATE INDEX ON {rows} (rec)"
ANALYZE_ROWS: Final[LiteralString] = "ANALYZE {rows}"
DROP: Final[LiteralString] = "DROP TABLE IF EXISTS {raw}, {fix}, {rows}"


@dataclass(frozen=True)
class Staging:
    """The names of one import's staging tables."""

    key: str

    @classmethod
    def new(cls) -> Staging:
        return cls(uuid.uuid4().hex[:16])

    @property
    def rows(self) -> pgsql.Identifier:
        return pgsql.Identifier(f"import_{self.key}_rows")

    def sql(self, template: LiteralString) -> pgsql.Composed:
        return pgsql.SQL(template).format(
            raw=pgsql.Identifier(f"import_{self.key}_raw"),
            fix=pgsql.Identifier(f"import_{self.key}_fix"),
            rows=self.rows,
            canonical=pgsql.SQL(CANONICAL),
        )


@dataclass(frozen=True)
class Loaded:
    records: int  # data records read (blank lines included): the merge's batch keys run 1..


async def load(session: AsyncSession, staging: Staging, reader: CsvToCopy) -> Loaded:
    """Create the staging tables and `COPY` the file into `_raw` (one transaction: a file
    that turns out not to be UTF-8 leaves nothing behind but the tables `drop` removes)."""
    columns = await asyncio.to_thread(reader.header)
    target = pgsql.SQL("COPY {raw} ({cols}) FROM STDIN (FORMAT csv)").format(
        raw=pgsql.Identifier(f"import_{staging.key}_raw"),
        cols=pgsql.SQL(", ").join(pgsql.Identifier(c) for c in ("rec", "line", "error", *columns)),
    )
    async with session.begin():
        conn = await driver_connection(session)
        await conn.execute(LONG_STATEMENT)
        await conn.execute(staging.sql(CREATE_RAW))
        await conn.execute(staging.sql(CREATE_FIX))
        async with conn.cursor() as cur, cur.copy(target) as copy:
            while True:
                # Reading the next chunk overlaps with psycopg sending the last one.
                chunk = await asyncio.to_thread(reader.next_chunk)
                await copy.write(chunk.data)
                if chunk.done:
                    break
    return Loaded(chunk.records)


async def judge(session: AsyncSession, staging: Staging) -> None:
    """Judge what SQL cannot (`check_row`, into `_fix`), then build the typed `_rows`."""
    async with session.begin():
        conn = await driver_connection(session)
        await conn.execute(LONG_STATEMENT)
        await conn.execute(SORT_MEMORY)
        await _fix_suspects(conn, staging)
        await conn.execute(staging.sql(BUILD_ROWS))
        await conn.execute(staging.sql(INDEX_ROWS))
        await conn.execute(staging.sql(ANALYZE_ROWS))


async def _fix_suspects(conn: AsyncConnection[Any], staging: Staging) -> None:
    fix_copy = staging.sql("COPY {fix} FROM STDIN")
    async with conn.cursor(name=f"suspects_{staging.key}") as suspects:
        await suspects.execute(staging.sql(SUSPECTS))
        while batch := await suspects.fetchmany(5000):
            judged = await asyncio.to_thread(_judged, batch)
            async with conn.cursor() as cur, cur.copy(fix_copy) as copy:
                for row in judged:
                    await copy.write_row(row)


def _judged(batch: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for rec, line, *cells in batch:
        verdict = check_row({c: v or "" for c, v in zip(CELLS, cells, strict=True)})
        if isinstance(verdict, str):
            out.append((rec, line, verdict, *([None] * len(CELLS))))
        else:
            out.append(
                (
                    rec,
                    line,
                    None,
                    verdict.sku,
                    verdict.name,
                    verdict.category,
                    verdict.price_minor,
                    verdict.currency,
                    verdict.description,
                    verdict.location,
                    verdict.on_hand,
                )
            )
    return out


async def batches_sharing_skus(session: AsyncSession, staging: Staging, size: int) -> set[int]:
    """The batches (from 0, `size` records each) that hold a SKU an earlier one holds."""
    async with session.begin():
        conn = await driver_connection(session)
        await conn.execute(LONG_STATEMENT)
        await conn.execute(SORT_MEMORY)
        found = await conn.execute(staging.sql(SHARED_BATCHES), {"size": size})
        return {int(k) for (k,) in await found.fetchall()}


async def drop(session: AsyncSession, staging: Staging) -> None:
    async with session.begin():
        conn = await driver_connection(session)
        await conn.execute(staging.sql(DROP))
