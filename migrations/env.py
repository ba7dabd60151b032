"""Alembic environment (async, psycopg 3).

Migrations run with a short `lock_timeout`: on a live database a DDL statement waiting
behind a long transaction would otherwise queue every query behind itself. Failing fast
and retrying the deploy is the safe choice.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shelfwise import models  # noqa: F401  (registers every table on Base.metadata)
from shelfwise.db import Base, sqlalchemy_url

config = context.config
target_metadata = Base.metadata
LOCK_TIMEOUT = os.environ.get("SHELFWISE_MIGRATION_LOCK_TIMEOUT", "5s")


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Procrastinate's tables are created from its own schema SQL, not from our models."""
    if name and name.startswith("procrastinate_"):
        return False
    table = getattr(obj, "table", None)
    if type_ == "foreign_key_constraint" and getattr(
        getattr(obj, "referred_table", None), "name", ""
    ).startswith("procrastinate_"):
        return False
    return not (table is not None and getattr(table, "name", "").startswith("procrastinate_"))


def database_url() -> str:
    url = config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL given to migrations")
    return sqlalchemy_url(str(url))


def run_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        transaction_per_migration=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(
        database_url(),
        poolclass=pool.NullPool,
        # Session-wide, so it also covers the statements alembic issues itself.
        connect_args={"options": f"-c lock_timeout={LOCK_TIMEOUT}"},
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    asyncio.run(run_online())
