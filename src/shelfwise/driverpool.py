"""A small psycopg pool for the hottest statements: single-row reads, and placing orders.

SQLAlchemy earns its keep in use cases (unit of work, composable queries, transactions).
On a single-row read on the hot path it costs more than the query: measured on this
machine, ~440 µs per `SELECT ... WHERE id = ?` through SQLAlchemy Core versus ~75 µs
through psycopg itself (docs/decisions/0012-hot-reads-on-the-driver.md). So a handful of
fixed SQL strings run here, on an autocommit pool of the same driver: no second driver,
no BEGIN/COMMIT round trips, plain dict rows. Statements are prepared by psycopg after
a few executions. Everything else keeps using SQLAlchemy.

`transaction()` lends a connection inside an explicit transaction; placing an order, the
one write measured to need the driver (docs/decisions/0013), sends its statements in
batches of one round trip each (`batches.py`, docs/decisions/0041).

An unreachable database is `DatabaseUnavailable` here, at the door (503 at the HTTP
edge), and refused at once while the breaker knows it is down (`availability.py`). A
caller already queued for a connection when the database went away is let go with the
same error as soon as the breaker opens, not after the pool's timeout: the pool's own
failed connects tell the breaker (`_breaker_reporting`), whose probe then opens it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, LiteralString, Self

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from shelfwise.availability import (
    CONNECT_TIMEOUT_SECONDS,
    RECONNECT_GIVE_UP_SECONDS,
    DatabaseBreaker,
    is_connection_failure,
)
from shelfwise.observability.pools import observe_driver_pool
from shelfwise.observability.statements import timed_cursor_class

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


def _breaker_reporting(breaker: DatabaseBreaker) -> type[AsyncConnection[Any]]:
    """A connection class whose failed connects tell `breaker`. The pool makes its
    connections in the background and retries with back-off for `reconnect_timeout`:
    without this, a caller queued for a new connection while the database is gone learns
    nothing until its pool timeout, and nobody else may be there to notice."""

    class BreakerReportingConnection(AsyncConnection[Any]):
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Self:
            try:
                return await super().connect(*args, **kwargs)
            except psycopg.OperationalError as exc:
                if is_connection_failure(exc):
                    breaker.failed(exc, "driver")
                raise

    return BreakerReportingConnection


class DriverPool:
    def __init__(
        self,
        url: str,
        *,
        max_size: int = 10,
        timeout: float = 5.0,
        prepare: bool = True,
        slow_statement_ms: float = 250.0,
        held_warn_seconds: float = 30.0,
        breaker: DatabaseBreaker | None = None,
        connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        self.breaker = breaker or DatabaseBreaker(url)
        self.prepares = prepare
        # prepare=False behind a transaction-pooling pgbouncer: a statement prepared on
        # one server connection is missing on the next (db.connect_args).
        self._pool: AsyncConnectionPool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            open=False,
            reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
            connection_class=_breaker_reporting(self.breaker),
            kwargs={
                "autocommit": True,
                "connect_timeout": connect_timeout,
                "row_factory": dict_row,
                "cursor_factory": timed_cursor_class("driver", slow_statement_ms),
                "application_name": "shelfwise-driver",
                **({} if prepare else {"prepare_threshold": None}),
            },
            name="shelfwise-driver",
        )
        # Wait time, waiters, timeouts and held-too-long checkouts (observability/pools.py).
        observe_driver_pool(self._pool, "driver", held_warn_seconds)
        self.breaker.on_open.append(self._release_waiters)

    async def open(self) -> None:
        await self._pool.open(wait=True, timeout=10)

    async def close(self) -> None:
        if self._release_waiters in self.breaker.on_open:
            self.breaker.on_open.remove(self._release_waiters)
        await self._pool.close()
        await self.breaker.close()

    async def _release_waiters(self) -> None:
        """The breaker opened: every caller queued for a connection gets
        `DatabaseUnavailable` now. psycopg_pool has no public call for this; it is what
        its own `close()` does to its queue (the lock, then `fail` per waiting client,
        which refuses a client that was just handed a connection)."""
        pool = self._pool
        async with pool._lock:
            waiting = list(pool._waiting)
            pool._waiting.clear()
        for client in waiting:
            await client.fail(self.breaker.unavailable())

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection; connection failures (also inside the block) become
        `DatabaseUnavailable`."""
        self.breaker.check()
        try:
            async with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:  # first: PoolTimeout is an OperationalError too
            if self.breaker.is_open:  # no connection could be made, not a busy pool
                raise self.breaker.unavailable() from exc
            raise
        except psycopg.OperationalError as exc:
            if not is_connection_failure(exc):
                raise
            raise self.breaker.failed(exc, "driver") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection inside BEGIN ... COMMIT (ROLLBACK if the block raises). Placing an
        order sends BEGIN and COMMIT with its statements instead (`batches.transaction`)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch_one(self, sql: LiteralString, params: tuple[Any, ...]) -> dict[str, Any] | None:
        async with self.connection() as conn:
            cursor = await conn.execute(sql, params)
            row: dict[str, Any] | None = await cursor.fetchone()
            return row
