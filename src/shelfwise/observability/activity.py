"""Gauges read from the database: transactions (pg_stat_activity) and reservations.

Refreshed by the worker every few seconds and by the API on each scrape of `/metrics`,
so both processes report the same numbers (dashboards and alerts take `max`).
Each query is one aggregate over a small view or an indexed status; none holds a lock.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.config import Settings
from shelfwise.db import Database
from shelfwise.observability.metrics import (
    DB_IDLE_IN_TRANSACTION,
    DB_IDLE_IN_TRANSACTION_AGE,
    DB_LONG_TRANSACTIONS,
    DB_OLDEST_TRANSACTION_AGE,
    RESERVATIONS_OLDEST_AGE,
    RESERVATIONS_OUTSTANDING,
    RESERVATIONS_OVERDUE,
    RESERVATIONS_OVERDUE_AGE,
    STOCK_OUT_LEVELS,
)

log = structlog.get_logger("shelfwise.db")
REFRESH_SECONDS = 10.0

# Only client sessions of this database, never the session asking.
ACTIVITY_SQL = text(
    """
    SELECT count(*) FILTER (WHERE state LIKE 'idle in transaction%') AS idle_in_tx,
           coalesce(max(extract(epoch FROM now() - state_change))
                    FILTER (WHERE state LIKE 'idle in transaction%'), 0)::float8 AS idle_age,
           count(*) FILTER (WHERE now() - xact_start > make_interval(secs => :long_after))
               AS long_tx,
           coalesce(max(extract(epoch FROM now() - xact_start)), 0)::float8 AS oldest_tx
      FROM pg_stat_activity
     WHERE datname = current_database()
       AND backend_type = 'client backend'
       AND pid <> pg_backend_pid()
    """
)
RESERVATIONS_SQL = text(
    """
    SELECT count(*) AS outstanding,
           coalesce(max(extract(epoch FROM now() - created_at)), 0)::float8 AS oldest,
           count(*) FILTER (WHERE expires_at <= now()) AS overdue,
           coalesce(max(extract(epoch FROM now() - expires_at))
                    FILTER (WHERE expires_at <= now()), 0)::float8 AS overdue_age
      FROM orders
     WHERE status = 'reserved'
    """
)
STOCK_OUTS_SQL = text("SELECT count(*) FROM stock_levels WHERE on_hand - reserved <= 0")


async def refresh_database_gauges(session: AsyncSession, *, long_after_seconds: float) -> None:
    async with session.begin():
        idle, idle_age, long_tx, oldest = (
            await session.execute(ACTIVITY_SQL, {"long_after": long_after_seconds})
        ).one()
        reservations = (await session.execute(RESERVATIONS_SQL)).one()
        stock_outs = await session.scalar(STOCK_OUTS_SQL)
    DB_IDLE_IN_TRANSACTION.set(idle)
    DB_IDLE_IN_TRANSACTION_AGE.set(idle_age)
    DB_LONG_TRANSACTIONS.set(long_tx)
    DB_OLDEST_TRANSACTION_AGE.set(oldest)
    outstanding, oldest_reservation, overdue, overdue_age = reservations
    RESERVATIONS_OUTSTANDING.set(outstanding)
    RESERVATIONS_OLDEST_AGE.set(oldest_reservation)
    RESERVATIONS_OVERDUE.set(overdue)
    RESERVATIONS_OVERDUE_AGE.set(overdue_age)
    STOCK_OUT_LEVELS.set(stock_outs or 0)


async def watch_database(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """The worker's loop: refresh the gauges every `REFRESH_SECONDS` until `stop`."""
    while not stop.is_set():
        try:
            async with db.sessions() as session:
                await refresh_database_gauges(
                    session, long_after_seconds=settings.db_long_transaction_seconds
                )
        except Exception as exc:  # a metrics hiccup must not stop the worker
            log.warning("database_gauges_failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
