"""`in_transaction` retries real serialization failures, and only those."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shelfwise.context import AppContext
from shelfwise.transactions import Isolation, in_transaction


def retries(use_case: str) -> float:
    value = REGISTRY.get_sample_value(
        "shelfwise_db_transaction_retries_total", {"use_case": use_case, "sqlstate": "40001"}
    )
    return value or 0.0


async def test_serialization_failure_is_retried(ctx: AppContext, database_url: str) -> None:
    async with ctx.db.sessions() as session, session.begin():
        await session.execute(text("CREATE TABLE counter (id int PRIMARY KEY, n int)"))
        await session.execute(text("INSERT INTO counter VALUES (1, 0)"))
    attempts: list[int] = []
    before = retries("test_counter")

    async def work() -> Any:
        attempts.append(1)
        await session.execute(text("SELECT n FROM counter WHERE id = 1"))  # snapshot taken
        if len(attempts) == 1:
            # Another client commits a change to the row after our snapshot...
            async with await psycopg.AsyncConnection.connect(
                database_url, autocommit=True
            ) as other:
                await other.execute("UPDATE counter SET n = n + 100 WHERE id = 1")
        # ...so updating it under REPEATABLE READ fails with 40001 on the first attempt.
        return await session.scalar(text("UPDATE counter SET n = n + 1 WHERE id = 1 RETURNING n"))

    async with ctx.db.sessions() as session:
        result = await in_transaction(
            session, work, use_case="test_counter", isolation=Isolation.REPEATABLE_READ
        )
    assert result == 101
    assert len(attempts) == 2
    assert retries("test_counter") == before + 1


async def test_other_errors_are_not_retried(ctx: AppContext) -> None:
    attempts: list[int] = []

    async def work() -> None:
        attempts.append(1)
        await session.execute(text("SELECT 1 / 0"))

    async with ctx.db.sessions() as session:
        with pytest.raises(DBAPIError):
            await in_transaction(session, work, use_case="test_division")
    assert len(attempts) == 1
