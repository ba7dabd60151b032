"""Database signals: slow statements, pool waiters and timeouts, leaked connections,
idle-in-transaction sessions — each made to happen on purpose and then observed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from structlog.testing import capture_logs

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.db import open_database
from shelfwise.observability.activity import refresh_database_gauges
from shelfwise.observability.metrics import (
    DB_CONNECTION_LEAKS,
    DB_IDLE_IN_TRANSACTION,
    DB_POOL_TIMEOUTS,
)
from shelfwise.observability.pools import POOL_GAUGES
from shelfwise.observability.statements import normalize_sql
from tests.support import wait_until


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "db_slow_statement_ms": 50.0,
            "db_connection_held_warn_seconds": 0.3,
        }
    )


@pytest.fixture
async def small_ctx(settings: Settings, clock: FixedClock) -> AsyncIterator[AppContext]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application.state.ctx


def _value(metric: Any, **labels: str) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.labels == labels and not sample.name.endswith("_created"):
                return float(sample.value)
    return 0.0


def _pool_waiters(label: str) -> float:
    for family in POOL_GAUGES.collect():
        for sample in family.samples:
            if sample.name == "shelfwise_db_pool_waiters" and sample.labels["pool"] == label:
                return float(sample.value)
    return 0.0


def test_normalized_sql_carries_no_literals() -> None:
    assert (
        normalize_sql("SELECT *\n  FROM users WHERE email = 'a@b.c' AND n > 42 LIMIT %(l)s")
        == "SELECT * FROM users WHERE email = ? AND n > ? LIMIT %(l)s"
    )
    assert normalize_sql("SELECT col_2, t1.x FROM t1") == "SELECT col_2, t1.x FROM t1"


async def test_slow_statements_are_logged_from_both_pools_without_parameters(
    small_ctx: AppContext,
) -> None:
    tracer = TracerProvider().get_tracer("test")
    structlog.contextvars.bind_contextvars(request_id="req-slow-statement")
    try:
        with capture_logs() as logs, tracer.start_as_current_span("slow") as span:
            async with small_ctx.db.sessions() as session:
                await session.execute(text("SELECT pg_sleep(:s), 'secret-value'"), {"s": 0.08})
            await small_ctx.driver.fetch_one("SELECT pg_sleep(%s)", (0.08,))
            await small_ctx.driver.fetch_one("SELECT 1", ())  # fast: not logged
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    slow = [entry for entry in logs if entry["event"] == "db_slow_statement"]
    assert [entry["pool"] for entry in slow] == ["sqlalchemy", "driver"]
    trace_id = format(span.get_span_context().trace_id, "032x")
    for entry in slow:
        assert entry["duration_ms"] >= 50
        assert entry["request_id"] == "req-slow-statement"
        assert entry["trace_id"] == trace_id
        assert "0.08" not in entry["statement"]
        assert "secret-value" not in entry["statement"]
    assert slow[0]["statement"] == "SELECT pg_sleep(%(s)s), ?"


async def test_a_leaked_connection_is_logged_with_the_code_that_took_it(
    small_ctx: AppContext,
) -> None:
    before = _value(DB_CONNECTION_LEAKS, pool="sqlalchemy")
    with capture_logs() as logs:
        await hold_a_connection_on_purpose(small_ctx, logs)
    entry = next(entry for entry in logs if entry["event"] == "db_connection_held_too_long")
    assert entry["pool"] == "sqlalchemy"
    assert "hold_a_connection_on_purpose" in entry["taken_by"]
    assert "hold_a_connection_on_purpose" in entry["stack"]
    # The frames outside the taker are read from the task when reported: its caller too.
    assert "test_a_leaked_connection_is_logged_with_the_code_that_took_it" in entry["stack"]
    assert _value(DB_CONNECTION_LEAKS, pool="sqlalchemy") == before + 1


async def hold_a_connection_on_purpose(ctx: AppContext, logs: list[dict[str, Any]]) -> None:
    async with ctx.db.sessions() as session:
        await session.execute(text("SELECT 1"))  # checked out until the session closes

        async def reported() -> bool:
            return any(entry["event"] == "db_connection_held_too_long" for entry in logs)

        await wait_until(reported, timeout=5, what="db_connection_held_too_long")


async def test_a_leaked_driver_connection_is_reported_too(small_ctx: AppContext) -> None:
    before = _value(DB_CONNECTION_LEAKS, pool="driver")
    with capture_logs() as logs:
        async with small_ctx.driver.transaction():

            async def reported() -> bool:
                return any(e["event"] == "db_connection_held_too_long" for e in logs)

            await wait_until(reported, timeout=5, what="driver pool leak report")
    entry = next(entry for entry in logs if entry["event"] == "db_connection_held_too_long")
    assert entry["pool"] == "driver"
    assert "test_a_leaked_driver_connection_is_reported_too" in entry["stack"]
    assert _value(DB_CONNECTION_LEAKS, pool="driver") == before + 1


async def test_an_exhausted_pool_counts_waiters_and_timeouts(settings: Settings) -> None:
    tiny = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout_seconds": 0.3}
    )
    db = open_database(tiny, str(settings.database_url))
    before = _value(DB_POOL_TIMEOUTS, pool="sqlalchemy")
    try:
        async with db.engine.connect() as held:
            await held.execute(text("SELECT 1"))  # the pool's only connection
            waiting = asyncio.create_task(db.engine.connect().__aenter__())

            async def queued() -> bool:
                return _pool_waiters("sqlalchemy") == 1

            await wait_until(queued, timeout=2, what="a waiter")
            with pytest.raises(sa_exc.TimeoutError):
                await waiting
        assert _pool_waiters("sqlalchemy") == 0
        assert _value(DB_POOL_TIMEOUTS, pool="sqlalchemy") == before + 1
    finally:
        await db.dispose()


async def test_idle_in_transaction_sessions_are_counted(
    small_ctx: AppContext, database_url: str
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as idle:
        await idle.execute("SELECT 1")  # a transaction is now open, and nothing runs in it
        async with small_ctx.db.sessions() as session:
            await refresh_database_gauges(session, long_after_seconds=60)
        assert _value(DB_IDLE_IN_TRANSACTION) >= 1
        await idle.rollback()
    async with small_ctx.db.sessions() as session:
        await refresh_database_gauges(session, long_after_seconds=60)
    assert _value(DB_IDLE_IN_TRANSACTION) == 0
