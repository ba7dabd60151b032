"""`DriverPool.transaction(pipeline=True)`: BEGIN ... COMMIT in psycopg's pipeline mode
(docs/decisions/0035), the transaction placing an order runs in.

Statements are only queued until something is fetched, so an error can surface later
than the statement that caused it: at a fetch, or at COMMIT. Whichever way the block
ends badly, nothing it wrote may stay, and the pool's one connection must serve the
next transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import pq

from shelfwise.db import libpq_url
from shelfwise.driverpool import DriverPool, fetch_row
from shelfwise.orders.store import send
from tests.support import wait_until

CREATE = "CREATE TABLE pipelined (n int PRIMARY KEY CHECK (n > 0))"
INSERT = "INSERT INTO pipelined (n) VALUES (%s)"
COUNT = "SELECT count(*) FROM pipelined"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[DriverPool]:
    driver = DriverPool(libpq_url(database_url), max_size=1)  # one connection: reused
    await driver.open()
    async with driver.connection() as conn:
        await conn.execute(CREATE)
    try:
        yield driver
    finally:
        await driver.close()


async def rows(pool: DriverPool) -> int:
    async with pool.connection() as conn:
        row = await fetch_row(conn, COUNT, ())
    assert row is not None
    return int(row[0])


async def still_serves(pool: DriverPool) -> None:
    async with pool.transaction(pipeline=True) as conn:
        await conn.execute(INSERT, (100,))
    async with pool.connection() as conn:
        assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        assert conn.pgconn.pipeline_status == pq.PipelineStatus.OFF
    assert await rows(pool) == 1


async def test_queued_statements_commit_at_the_end(pool: DriverPool) -> None:
    async with pool.transaction(pipeline=True) as conn:
        await conn.execute(INSERT, (1,))  # queued, never fetched
        await conn.execute(INSERT, (2,))
        # A fetch sends what is queued and sees it: one transaction from BEGIN on.
        assert await fetch_row(conn, COUNT, ()) == (2,)
    assert await rows(pool) == 2


async def test_a_failing_statement_rolls_back_what_was_queued_before_it(
    pool: DriverPool,
) -> None:
    async def block() -> None:
        async with pool.transaction(pipeline=True) as conn:
            await conn.execute(INSERT, (1,))
            await conn.execute(INSERT, (1,))  # fails on the server: the pipeline aborts
            await fetch_row(conn, COUNT, ())  # the fetch reports it

    with pytest.raises(psycopg.errors.UniqueViolation):
        await block()
    assert await rows(pool) == 0
    await still_serves(pool)


async def test_an_error_first_seen_at_commit_rolls_back(pool: DriverPool) -> None:
    """Nothing fetched after the bad statement: the error arrives with COMMIT's Sync."""

    async def block() -> None:
        async with pool.transaction(pipeline=True) as conn:
            await conn.execute(INSERT, (1,))
            await conn.execute(INSERT, (-1,))

    with pytest.raises(psycopg.errors.CheckViolation):
        await block()
    assert await rows(pool) == 0
    await still_serves(pool)


async def test_an_exception_in_the_block_rolls_back(pool: DriverPool) -> None:
    """A refusal decided in Python (an idempotency key in use, too little stock) after
    statements were queued and some read."""

    async def block() -> None:
        async with pool.transaction(pipeline=True) as conn:
            await conn.execute(INSERT, (1,))
            assert await fetch_row(conn, COUNT, ()) == (1,)
            await conn.execute(INSERT, (2,))  # queued when the block gives up
            raise LookupError("refused")

    with pytest.raises(LookupError):
        await block()
    assert await rows(pool) == 0
    await still_serves(pool)


async def test_a_cancelled_block_rolls_back_and_leaves_a_usable_pool(
    pool: DriverPool, database_url: str
) -> None:
    """The request timeout (`http/timeouts.py`) or a client gone cancels the request's
    task while it waits on the database in the middle of the pipeline."""

    async def block() -> None:
        async with pool.transaction(pipeline=True) as conn:
            await conn.execute(INSERT, (1,))
            sleeper = await send(conn, "SELECT pg_sleep(30)", ())
            await sleeper.fetchone()

    task = asyncio.create_task(block())
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher:

        async def sleeping() -> bool:
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%%'"
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 1

        await wait_until(sleeping, what="the pipelined block to wait on the server")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)  # not the 30 s of the sleep
    await asyncio.wait_for(still_serves(pool), timeout=10)
