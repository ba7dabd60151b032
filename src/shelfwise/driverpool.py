"""A small psycopg pool for the hottest statements: single-row reads, and placing orders.

SQLAlchemy earns its keep in use cases (unit of work, composable queries, transactions).
On a single-row read on the hot path it costs more than the query: measured on this
machine, ~440 µs per `SELECT ... WHERE id = ?` through SQLAlchemy Core versus ~75 µs
through psycopg itself (docs/decisions/0012-hot-reads-on-the-driver.md). So a handful of
fixed SQL strings run here, on an autocommit pool of the same driver: no second driver,
no BEGIN/COMMIT round trips, plain dict rows. Statements are prepared by psycopg after
a few executions. Everything else keeps using SQLAlchemy.

`transaction()` lends a connection inside an explicit transaction, for the one write
that is measured to need it: placing an order (docs/decisions/0013).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, LiteralString

from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

Params = Sequence[Any] | Mapping[str, Any]


async def fetch_row(
    conn: AsyncConnection[Any], sql: LiteralString, params: Params
) -> tuple[Any, ...] | None:
    """Run `sql` on any psycopg connection (a pool's, or one under a SQLAlchemy session)
    and return its first row as a tuple, whatever the connection's row factory."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(sql, params)
    return await cursor.fetchone()


async def fetch_rows(
    conn: AsyncConnection[Any], sql: LiteralString, params: Params
) -> list[tuple[Any, ...]]:
    """Like `fetch_row`, every row."""
    cursor = conn.cursor(row_factory=tuple_row)
    await cursor.execute(sql, params)
    return await cursor.fetchall()


class DriverPool:
    def __init__(
        self, url: str, *, max_size: int = 10, timeout: float = 5.0, prepare: bool = True
    ) -> None:
        # prepare=False behind a transaction-pooling pgbouncer: a statement prepared on
        # one server connection is missing on the next (db.connect_args).
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": "shelfwise-driver",
                **({} if prepare else {"prepare_threshold": None}),
            },
            name="shelfwise-driver",
        )

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=10)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection inside BEGIN ... COMMIT (ROLLBACK if the block raises)."""
        async with self._pool.connection() as conn, conn.transaction():
            yield conn

    async def fetch_one(self, sql: LiteralString, params: tuple[Any, ...]) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            row: dict[str, Any] | None = await cursor.fetchone()  # type: ignore[assignment]
            return row
