"""Test harness: a real PostgreSQL, and a fresh database per test copied from a template.

The template is migrated once per migration-set (its name carries a hash of the
migration files), then each test gets `CREATE DATABASE ... TEMPLATE`, which copies files
instead of replaying migrations. Tests can therefore commit for real, run concurrently
against the database, and still run in any order.

Database server: TEST_DATABASE_URL, else DATABASE_URL, else an embedded PostgreSQL
(pgserver) under ./var/test.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Environment, Settings
from shelfwise.context import AppContext
from shelfwise.db import libpq_url
from shelfwise.identity.models import Role
from shelfwise.migrate import MIGRATIONS_DIR, upgrade
from tests.support import make_user

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def _with_database(url: str, name: str) -> str:
    return make_url(libpq_url(url)).set(database=name).render_as_string(hide_password=False)


def _migrations_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(MIGRATIONS_DIR.rglob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def server_url() -> str:
    """A URL on the test PostgreSQL server with rights to create databases."""
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return libpq_url(url)
    from shelfwise.embedded import start_embedded

    # pgserver's build even where a system PostgreSQL is installed: the same server on
    # every machine (a new cluster would otherwise run it; docs/decisions/0029).
    return start_embedded(ROOT / "var" / "test", database="postgres", prefer_system=False)


@pytest.fixture(scope="session")
def template_name(server_url: str) -> str:
    name = f"shelfwise_tpl_{_migrations_hash()}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        # Serialise template creation across xdist workers.
        conn.execute("SELECT pg_advisory_lock(hashtext('shelfwise-test-template'))")
        try:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                building = f"{name}_building"
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(building)
                    )
                )
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(building)))
                upgrade(_with_database(server_url, building))
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(building), sql.Identifier(name)
                    )
                )
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext('shelfwise-test-template'))")
    return name


@pytest.fixture
def database_url(server_url: str, template_name: str) -> Iterator[str]:
    name = f"shelfwise_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_name)
            )
        )
    try:
        yield _with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env=Environment.TEST,
        database_url=database_url,
        data_dir=ROOT / "var" / "test",
        access_log=True,
        # Generous limits: tests that are about rate limiting build their own settings.
        rate_limit_login="1000/minute",
        rate_limit_register="1000/minute",
        rate_limit_refresh="1000/minute",
        rate_limit_anonymous="10000/minute",
        max_concurrent_requests_per_client=1000,
        # Tests talk to https://shelfwise.test, so Secure cookies flow as in production.
        # Several test processes may share one server (max_connections=100).
        db_pool_size=10,
        db_max_overflow=15,
        # A profile sleeps for its `seconds`: keep fuzzed requests (schemathesis) short.
        debug_profile_max_seconds=1,
    )


@pytest.fixture
async def app(settings: Settings, clock: FixedClock) -> AsyncIterator[Any]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def ctx(app: Any) -> AppContext:
    context: AppContext = app.state.ctx
    return context


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
        yield c


@pytest.fixture
async def admin(ctx: AppContext) -> dict[str, Any]:
    return await make_user(ctx, Role.ADMIN)


@pytest.fixture
async def staff(ctx: AppContext) -> dict[str, Any]:
    return await make_user(ctx, Role.STAFF)


@pytest.fixture
async def customer(ctx: AppContext) -> dict[str, Any]:
    return await make_user(ctx, Role.CUSTOMER)
