"""The embedded PostgreSQL used when no DATABASE_URL is configured.

`pgserver` ships real PostgreSQL binaries in a wheel. The cluster lives under
`<data_dir>/pg`, listens only on a unix socket inside that directory, and is reused by
later runs. Never used in production (settings refuse to start without DATABASE_URL).
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DATABASE_NAME = "shelfwise"
LOCK_FILE = ".embedded.lock"


def start_embedded(
    data_dir: Path, *, database: str = DATABASE_NAME, keep_running: bool = False
) -> str:
    """Start (or attach to) the embedded cluster; return a URL for `database`, creating it.

    The server stops when the last process using it exits, unless `keep_running`.
    Safe to call from several processes at once (pytest-xdist workers on a fresh clone):
    the first one initialises and starts the cluster while the others wait on a file lock."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp")))  # noqa: S108 pgserver lock dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver locks initdb/start, but not what comes before it: `mkdir(exist_ok=False)`
    # of the data directory (the second process fails with FileExistsError), the system
    # user it creates when run as root, and our own CREATE DATABASE. One lock per cluster
    # around all of it; the kernel drops it if the holder dies.
    with _exclusive(data_dir / LOCK_FILE):
        server: Any = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir.resolve() / "pg", cleanup_mode=None if keep_running else "stop"
        )
        ensure_database(server.get_uri("postgres"), database)
        preload_statement_statistics(server.get_uri("postgres"))
    url: str = server.get_uri(database)
    return url


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def preload_statement_statistics(admin_url: str) -> bool:
    """Ask for `pg_stat_statements` at the next start when this build ships it.

    `shelfwise db top` reads it. It must be preloaded, which takes a restart, so this
    only records the wish (`ALTER SYSTEM`); the cluster picks it up the next time it
    starts. pgserver 0.1.4 ships no contrib modules: then this does nothing, and
    `shelfwise db top` explains why it cannot answer."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"
        ).fetchone()
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
        current = [name.strip() for name in (row[0] if row else "").split(",") if name.strip()]
        if not available or "pg_stat_statements" in current:
            return False
        wanted = ", ".join([*current, "pg_stat_statements"])
        conn.execute(
            sql.SQL("ALTER SYSTEM SET shared_preload_libraries = {}").format(sql.Literal(wanted))
        )
        return True


def ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
