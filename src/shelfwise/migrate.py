"""Alembic, driven from code: `shelfwise migrate`, readiness checks and test templates."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncConnection

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@cache
def head_revisions() -> frozenset[str]:
    """Read once per process: the scripts on disk do not change while it runs."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return frozenset(script.get_heads())


@cache
def known_revisions() -> frozenset[str]:
    """Every revision this release's scripts define, head or not."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused"))
    return frozenset(revision.revision for revision in script.walk_revisions())


def schema_status(current: set[str]) -> str:
    """What readiness says about the database's schema: "ok" at this release's head, and
    also *ahead* of it (a revision these scripts do not know). Releases migrate before they
    roll out and migrations are backward compatible (expand, then contract a release
    later), so the pods still running the previous release keep serving while the new
    ones start; only a schema behind the code (not migrated yet) is not ready."""
    expected = head_revisions()
    if current == expected:
        return "ok"
    if current and not current <= known_revisions():
        return "ok"  # migrated by a newer release
    return f"at {sorted(current) or 'nothing'}, expected {sorted(expected)}"


async def current_revisions(conn: AsyncConnection) -> set[str]:
    def read(sync_conn: object) -> set[str]:
        return set(MigrationContext.configure(sync_conn).get_current_heads())  # type: ignore[arg-type]

    return await conn.run_sync(read)
