"""`batches.transaction`: BEGIN ... COMMIT sent with the statements around them, each
batch of queued statements one simple query (docs/decisions/0041), the transaction
placing an order runs in.

Statements are only queued until something is read, so an error can surface later than
the statement that caused it: at a read, or at COMMIT. Whichever way the block ends
badly, nothing it wrote may stay, and the pool's one connection must serve the next
transaction. A statement with parameters is prepared on the server at its first use on
a connection; the statements a failed batch prepared must not break the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import pq

from shelfwise import batches
from shelfwise.db import libpq_url
from shelfwise.driverpool import DriverPool, fetch_row
from shelfwise.store.unit import UnitOfWork, run_unit
from tests.support import wait_until

CREATE = "CREATE TABLE batched (n int PRIMARY KEY CHECK (n > 0), note text)"
INSERT = "INSERT INTO batched (n) VALUES (%s)"
INSERT_NOTE = "INSERT INTO batched (n, note) VALUES (%(n)s, %(note)s) RETURNING n, note"
COUNT = "SELECT count(*) FROM batched"


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
    async with batches.transaction(pool) as batch:
        batch.queue(INSERT, (100,))
    async with pool.connection() as conn:
        assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
    assert await rows(pool) == 1


async def test_queued_statements_commit_at_the_end(pool: DriverPool) -> None:
    async with batches.transaction(pool) as batch:
        batch.queue(INSERT, (1,))  # queued, never read
        batch.queue(INSERT, (2,))
        # A read sends what is queued and sees it: one transaction from BEGIN on.
        assert await batch.queue(COUNT, ()).fetchone() == (2,)
        batch.queue(INSERT, (3,))
    assert await rows(pool) == 3


async def test_values_are_bound_not_spliced(pool: DriverPool) -> None:
    """Client-side binding quotes every value: quotes, semicolons and percent signs in a
    value stay data, through a prepared statement and through a plain one."""
    note = "it's 100 %; DROP TABLE batched; --"
    async with batches.transaction(pool) as batch:
        written = batch.queue(INSERT_NOTE, {"n": 1, "note": note})
        assert await written.fetchone() == (1, note)
    assert await rows(pool) == 1


async def test_statements_of_one_batch_are_bound_together_each_with_its_own_values(
    pool: DriverPool,
) -> None:
    """A batch's prepared statements are bound in one pass: positional and named ones
    side by side get their own values, and a statement sent as it is keeps its `%`."""
    async with batches.transaction(pool) as batch:
        batch.queue(INSERT, (1,))
        named = batch.queue(INSERT_NOTE, {"n": 2, "note": "%s %(n)s"})
        literal = batch.queue("SELECT '100 %' AS note")  # no parameters: sent as it is
        batch.queue(INSERT, (3,))
        counted = batch.queue(COUNT, ())
        assert await named.fetchone() == (2, "%s %(n)s")
        assert await literal.fetchone() == ("100 %",)
        assert await counted.fetchone() == (3,)
    assert await rows(pool) == 3


async def test_a_failing_statement_rolls_back_what_was_queued_before_it(
    pool: DriverPool,
) -> None:
    async def block() -> None:
        async with batches.transaction(pool) as batch:
            batch.queue(INSERT, (1,))
            batch.queue(INSERT, (1,))  # fails on the server: the rest is skipped
            await batch.queue(COUNT, ()).fetchone()  # the read reports it

    with pytest.raises(psycopg.errors.UniqueViolation):
        await block()
    assert await rows(pool) == 0
    await still_serves(pool)


async def test_an_error_first_seen_at_commit_rolls_back(pool: DriverPool) -> None:
    """Nothing read after the bad statement: the error arrives with COMMIT's batch."""

    async def block() -> None:
        async with batches.transaction(pool) as batch:
            batch.queue(INSERT, (1,))
            batch.queue(INSERT, (-1,))

    with pytest.raises(psycopg.errors.CheckViolation):
        await block()
    assert await rows(pool) == 0
    await still_serves(pool)


async def test_an_exception_in_the_block_rolls_back(pool: DriverPool) -> None:
    """A refusal decided in Python (an idempotency key in use, too little stock) after
    statements were queued and some read."""

    async def block() -> None:
        async with batches.transaction(pool) as batch:
            batch.queue(INSERT, (1,))
            assert await batch.queue(COUNT, ()).fetchone() == (1,)
            batch.queue(INSERT, (2,))  # queued when the block gives up
            raise LookupError("refused")

    with pytest.raises(LookupError):
        await block()
    assert await rows(pool) == 0
    await still_serves(pool)


async def test_a_failed_batch_that_prepared_statements_leaves_them_usable(
    pool: DriverPool,
) -> None:
    """PREPARE is not undone by ROLLBACK: the connection's prepared statements are read
    back from the server after a failed batch that prepared some, neither prepared twice
    (an error) nor assumed (an error too)."""
    fresh = "INSERT INTO batched (n) VALUES (%s) RETURNING n + 0"  # not prepared yet

    async def block() -> None:
        async with batches.transaction(pool) as batch:
            batch.queue(fresh, (-1,))

    with pytest.raises(psycopg.errors.CheckViolation):
        await block()
    async with batches.transaction(pool) as batch:
        assert await batch.queue(fresh, (5,)).fetchone() == (5,)
    assert await rows(pool) == 1


async def test_a_cancelled_block_rolls_back_and_leaves_a_usable_pool(
    pool: DriverPool, database_url: str
) -> None:
    """The request timeout (`http/timeouts.py`) or a client gone cancels the request's
    task while it waits on the database in the middle of the transaction."""

    async def block() -> None:
        async with batches.transaction(pool) as batch:
            batch.queue(INSERT, (1,))
            await batch.queue("SELECT pg_sleep(30)").fetchone()

    task = asyncio.create_task(block())
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as watcher:

        async def sleeping() -> bool:
            cursor = await watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
                ("%SELECT pg_sleep%",),
            )
            row = await cursor.fetchone()
            return row is not None and row[0] == 1

        await wait_until(sleeping, what="the batched block to wait on the server")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=10)  # not the 30 s of the sleep
    await asyncio.wait_for(still_serves(pool), timeout=10)


async def test_a_statement_deallocated_by_another_user_of_the_connection_is_retried(
    pool: DriverPool,
) -> None:
    """psycopg answers a ROLLBACK it sees with DEALLOCATE ALL where it prepared statements
    of its own: the batch then meets a statement the connection no longer holds (26000)
    and the unit of work runs again, preparing it anew."""

    async def insert(unit: UnitOfWork, n: int) -> None:
        assert unit.batch is not None
        assert await unit.batch.queue(INSERT_NOTE, {"n": n, "note": "x"}).fetchone() == (n, "x")

    await run_unit(pool, lambda unit: insert(unit, 1), use_case="test", batched=True)
    async with pool.connection() as conn:  # the pool's one connection
        await conn.execute("DEALLOCATE ALL")
    await run_unit(pool, lambda unit: insert(unit, 2), use_case="test", batched=True)
    assert await rows(pool) == 2
