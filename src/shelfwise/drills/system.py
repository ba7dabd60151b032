"""The local system a drill breaks: the Shelfwise app (its lifespan, pools, loop watch) on
a database of its own, driven in-process, with thresholds low enough to trip in seconds.

`scratch_database` gives the CLI a throwaway migrated database on the embedded server (or
on the server `make run` uses) and drops it afterwards; tests pass their own database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI
from psycopg import sql
from sqlalchemy.engine import make_url

from shelfwise.app import create_app
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.db import libpq_url
from shelfwise.drills.base import refuse_production
from shelfwise.migrate import upgrade


@dataclass(slots=True)
class DrillSystem:
    app: FastAPI
    ctx: AppContext
    database_url: str  # libpq form, for the drills' own psycopg connections

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test")

    async def connect(self, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
        """A connection of the drill's own (a second 'client'), autocommit unless told."""
        kwargs.setdefault("autocommit", True)
        return await psycopg.AsyncConnection.connect(
            self.database_url, application_name="shelfwise-drill", **kwargs
        )


def drill_settings(base: Settings) -> Settings:
    """Signals tuned to trip within a drill's seconds, not production's minutes."""
    return base.model_copy(
        update={
            "loop_lag_sample_seconds": 0.02,
            "loop_blocked_threshold_seconds": 0.15,
            "db_slow_statement_ms": 30.0,
            "db_connection_held_warn_seconds": 0.3,
            "db_long_transaction_seconds": 0.5,
        }
    )


@asynccontextmanager
async def open_system(settings: Settings) -> AsyncIterator[DrillSystem]:
    refuse_production(settings)
    assert settings.database_url, "a drill needs a database URL"
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield DrillSystem(application, application.state.ctx, libpq_url(settings.database_url))


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A migrated database of the drill's own on `server_url`'s server, dropped afterwards,
    so a drill never leaves its big tables or stuck rows in the data `make run` serves."""
    url = libpq_url(server_url)
    name = f"shelfwise_drill_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        scratch = make_url(url).set(database=name).render_as_string(hide_password=False)
        upgrade(scratch)
        yield scratch
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
