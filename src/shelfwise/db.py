"""Engine, session factory and the declarative base.

The engine is created in the application's lifespan (never at import time) and disposed
on shutdown. Services own transactions: they receive an `AsyncSession` with no transaction
open and wrap each use case in `async with session.begin():`, which commits on success and
rolls back on any exception — so nothing commits unless the use case finished.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from sqlalchemy import DateTime, MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, relationship

from shelfwise.availability import DatabaseBreaker, guard_engine
from shelfwise.config import Settings
from shelfwise.events.doorbell import DOORBELL, Doorbell
from shelfwise.observability.pools import ObservedQueuePool, observe_engine_pool
from shelfwise.observability.statements import time_engine_statements

# Explicit constraint names: migrations can refer to them, and errors can be mapped by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def relation(argument: str, **kwargs: Any) -> Any:
    """`relationship()` that refuses implicit loading.

    Touching an attribute that was not loaded explicitly (`selectinload`, `joinedload`)
    raises instead of silently issuing one query per row: N+1 cannot happen unnoticed,
    and lazy I/O cannot happen at all under asyncio.
    """
    kwargs.setdefault("lazy", "raise")
    return relationship(argument, **kwargs)


def sqlalchemy_url(url: str) -> str:
    """Normalise a libpq-style URL to SQLAlchemy's psycopg 3 dialect."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def libpq_url(url: str) -> str:
    """The same URL in the plain form psycopg, psql and asyncpg understand."""
    return "postgresql://" + sqlalchemy_url(url).removeprefix("postgresql+psycopg://")


@dataclass(frozen=True, slots=True)
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    doorbell: Doorbell  # wakes the outbox relay after commits that wrote events
    breaker: DatabaseBreaker  # fail fast while the database is unreachable (availability.py)

    async def dispose(self) -> None:
        await self.doorbell.close()
        await self.engine.dispose()
        await self.breaker.close()


def connect_args(settings: Settings, application_name: str) -> dict[str, Any]:
    """psycopg connection arguments for the main DSN.

    Through a transaction-pooling pgbouncer (`db_transaction_pooling`) consecutive
    transactions may run on different server connections: a statement prepared on one is
    missing on the next, so psycopg prepares nothing; and pgbouncer 1.18 refuses the
    `options` startup parameter, so its `connect_query` sets the statement timeout.
    """
    if settings.db_transaction_pooling:
        return {"application_name": application_name, "prepare_threshold": None}
    return {
        "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
        "application_name": application_name,
    }


def open_database(settings: Settings, url: str) -> Database:
    engine = create_async_engine(
        sqlalchemy_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_pre_ping=False,  # a dead connection fails one request; pre-ping taxes them all
        pool_recycle=1800,
        echo=settings.db_echo,
        poolclass=ObservedQueuePool,  # wait time, waiters, timeouts, held-too-long
        connect_args=connect_args(settings, "shelfwise"),
    )
    time_engine_statements(engine, settings.db_slow_statement_ms)
    observe_engine_pool(engine.sync_engine.pool, settings.db_connection_held_warn_seconds)
    doorbell = Doorbell(libpq_url(settings.direct_url(url)))  # NOTIFY is a session thing
    sessions = async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, info={DOORBELL: doorbell}
    )
    breaker = DatabaseBreaker(libpq_url(url))
    guard_engine(engine, breaker)
    return Database(engine=engine, sessions=sessions, doorbell=doorbell, breaker=breaker)


@asynccontextmanager
async def session_scope(db: Database) -> AsyncIterator[AsyncSession]:
    """A session for one unit of work; the service inside decides when to begin/commit."""
    async with db.sessions() as session:
        yield session


async def driver_connection(session: AsyncSession) -> AsyncConnection[Any]:
    """The psycopg connection under the session's open transaction.

    For the few hot statements written as fixed SQL (docs/decisions/0013): they run in
    the same transaction as the session's own work, without SQLAlchemy's per-statement
    compile and result machinery. The session must not be used concurrently meanwhile.
    """
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver: AsyncConnection[Any] = raw.driver_connection  # type: ignore[assignment]
    return driver
