"""Transactions that may be retried: serialization failures and deadlocks (and a
prepared statement gone from under a batch, see `RETRYABLE_SQLSTATES`).

PostgreSQL aborts a transaction with SQLSTATE 40001 (serialization_failure) under
REPEATABLE READ / SERIALIZABLE when committing it would break the isolation promise, and
with 40P01 (deadlock_detected) when it had to break a lock cycle. Both are safe to retry
from the start: nothing was committed. Retries are bounded, with exponential backoff and
full jitter so colliding clients do not collide again in lock-step.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import psycopg
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.observability.metrics import TX_RETRIES

T = TypeVar("T")
log = structlog.get_logger("shelfwise.transactions")

# 26000 (invalid_sql_statement_name): a statement `batches.py` prepared on the connection
# was deallocated since (psycopg does so after a rollback); the next attempt prepares it.
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "26000"})


class Isolation(StrEnum):
    READ_COMMITTED = "READ COMMITTED"
    REPEATABLE_READ = "REPEATABLE READ"
    SERIALIZABLE = "SERIALIZABLE"


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg error, bare or wrapped by SQLAlchemy."""
    state = getattr(getattr(exc, "orig", exc), "sqlstate", None)
    return state if isinstance(state, str) else None


def backoff_seconds(
    attempt: int, *, base: float = 0.01, cap: float = 0.5, rng: random.Random | None = None
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0, min(cap, base * 2**attempt))


async def in_transaction(
    session: AsyncSession,
    work: Callable[[], Awaitable[T]],
    *,
    use_case: str,
    isolation: Isolation = Isolation.READ_COMMITTED,
    attempts: int = 5,
) -> T:
    """Run `work` in a transaction on `session`, retrying `RETRYABLE_SQLSTATES` up to
    `attempts` times."""

    async def once() -> T:
        async with session.begin():
            if isolation is not Isolation.READ_COMMITTED:
                await session.connection(execution_options={"isolation_level": isolation.value})
            return await work()

    return await retrying(once, use_case=use_case, attempts=attempts)


async def retrying(once: Callable[[], Awaitable[T]], *, use_case: str, attempts: int) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await once()
        except (DBAPIError, psycopg.Error) as exc:
            state = sqlstate(exc)
            if state not in RETRYABLE_SQLSTATES or attempt == attempts:
                raise
            TX_RETRIES.labels(use_case, state).inc()
            log.warning("transaction_retry", use_case=use_case, sqlstate=state, attempt=attempt)
            await asyncio.sleep(backoff_seconds(attempt))
    raise AssertionError("unreachable")  # pragma: no cover
