"""A small psycopg pool for the hottest single-statement reads.

SQLAlchemy earns its keep in use cases (unit of work, composable queries, transactions).
On a single-row read on the hot path it costs more than the query: measured on this
machine, ~440 µs per `SELECT ... WHERE id = ?` through SQLAlchemy Core versus ~75 µs
through psycopg itself (docs/decisions/0012-hot-reads-on-the-driver.md). So a handful of
fixed SQL strings run here, on an autocommit pool of the same driver: no second driver,
no BEGIN/COMMIT round trips, plain dict rows. Statements are prepared by psycopg after
a few executions. Everything else keeps using SQLAlchemy.
"""

from __future__ import annotations

from typing import Any, LiteralString

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class ReadPool:
    def __init__(self, url: str, *, max_size: int = 10, timeout: float = 5.0) -> None:
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": "shelfwise-reads",
            },
            name="shelfwise-reads",
        )

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=10)

    async def close(self) -> None:
        await self._pool.close()

    async def fetch_one(self, sql: LiteralString, params: tuple[Any, ...]) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            row: dict[str, Any] | None = await cursor.fetchone()  # type: ignore[assignment]
            return row
