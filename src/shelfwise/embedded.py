"""The embedded PostgreSQL used when no DATABASE_URL is configured.

`pgserver` ships real PostgreSQL binaries in a wheel, but no contrib modules. When the
machine has a system PostgreSQL with `pg_stat_statements` (Debian's `postgresql-NN`
under /usr/lib/postgresql/NN/bin), a *new* cluster is created and run with those
binaries instead, with `pg_stat_statements` preloaded, so `shelfwise db top` answers.
A cluster that exists keeps the major version that created it (its `PG_VERSION`):
pgserver's when it matches, else the system's binaries of that major, else a clear
error (docs/decisions/0029). pgserver still manages the cluster either way: the unix
socket inside the data directory, the lock, the processes sharing it, the stop at exit.

Never used in production (settings refuse to start without DATABASE_URL).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DATABASE_NAME = "shelfwise"
LOCK_FILE = ".embedded.lock"
SYSTEM_POSTGRES = Path("/usr/lib/postgresql")  # Debian/Ubuntu: one directory per major
STATEMENTS_LIBRARY = "pg_stat_statements"


class EmbeddedVersionMismatch(RuntimeError):
    """The data directory was created by a PostgreSQL major no binaries here can run."""


@dataclass(frozen=True, slots=True)
class Binaries:
    """The PostgreSQL binaries a cluster runs with, and whether they can preload
    `pg_stat_statements` (pgserver's build cannot)."""

    bin_dir: Path
    major: str
    source: str  # "pgserver" or "system"
    statements: bool


@cache
def pgserver_binaries() -> Binaries:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver import _commands

    bin_dir = Path(_commands.POSTGRES_BIN_PATH)
    version = subprocess.run(  # noqa: S603 the wheel's own binary, no user input
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout  # "postgres (PostgreSQL) 16.2"
    major = version.split()[-1].split(".")[0]
    return Binaries(bin_dir, major, "pgserver", statements=False)


def system_binaries(root: Path = SYSTEM_POSTGRES) -> list[Binaries]:
    """Every system PostgreSQL server under `root`, newest major first."""
    found = []
    for major_dir in root.glob("*"):
        bin_dir = major_dir / "bin"
        if not major_dir.name.isdigit() or not (bin_dir / "postgres").is_file():
            continue
        statements = (major_dir / "lib" / f"{STATEMENTS_LIBRARY}.so").is_file()
        found.append(Binaries(bin_dir, major_dir.name, "system", statements))
    return sorted(found, key=lambda each: int(each.major), reverse=True)


def choose_binaries(
    pgdata: Path, *, prefer_system: bool = True, system_root: Path = SYSTEM_POSTGRES
) -> Binaries:
    """The binaries for the cluster in `pgdata` (existing or not yet created)."""
    version_file = pgdata / "PG_VERSION"
    if version_file.exists():
        created_by = version_file.read_text().strip()
        # A cluster created to preload pg_stat_statements cannot start without it.
        conf = pgdata / "postgresql.conf"
        preloads = conf.exists() and STATEMENTS_LIBRARY in conf.read_text()
        candidates = [pgserver_binaries(), *system_binaries(system_root)]
        for each in candidates:
            if each.major == created_by and (each.statements or not preloads):
                return each
        majors = ", ".join(sorted({each.major for each in candidates}))
        raise EmbeddedVersionMismatch(
            f"{pgdata} was created by PostgreSQL {created_by}"
            f"{' preloading ' + STATEMENTS_LIBRARY if preloads else ''}; this machine runs "
            f"{majors}: "
            f"install postgresql-{created_by}, or move {pgdata} away to start a new cluster"
        )
    if prefer_system:
        for each in system_binaries(system_root):
            if each.statements:
                return each
    return pgserver_binaries()


def start_embedded(
    data_dir: Path,
    *,
    database: str = DATABASE_NAME,
    keep_running: bool = False,
    prefer_system: bool = True,
) -> str:
    """Start (or attach to) the embedded cluster; return a URL for `database`, creating it.

    The server stops when the last process using it exits, unless `keep_running`.
    `prefer_system=False` creates a new cluster with pgserver's binaries even when a
    system PostgreSQL is installed (the test suite: the same server on every machine).
    Safe to call from several processes at once (pytest-xdist workers on a fresh clone):
    the first one initialises and starts the cluster while the others wait on a file lock."""
    os.environ.setdefault("XDG_RUNTIME_DIR", str(Path("/tmp")))  # noqa: S108 pgserver lock dir
    data_dir.mkdir(parents=True, exist_ok=True)
    # pgserver locks initdb/start, but not what comes before it: `mkdir(exist_ok=False)`
    # of the data directory (the second process fails with FileExistsError), the system
    # user it creates when run as root, and our own CREATE DATABASE. One lock per cluster
    # around all of it; the kernel drops it if the holder dies.
    with _exclusive(data_dir / LOCK_FILE):
        pgdata = data_dir.resolve() / "pg"
        binaries = choose_binaries(pgdata, prefer_system=prefer_system)
        server = _server(pgdata, binaries, cleanup_mode=None if keep_running else "stop")
        ensure_database(server.get_uri("postgres"), database)
        create_statements_extension(server.get_uri(database))
    url: str = server.get_uri(database)
    return url


def stop_embedded(data_dir: Path) -> None:
    """Let go of the cluster under `data_dir` now rather than at exit; the last process
    to let go stops it (what `start_embedded` without `keep_running` does at exit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer

    server = PostgresServer._instances.get(data_dir.resolve() / "pg")
    if server is not None:
        server.cleanup()


def _server(pgdata: Path, binaries: Binaries, *, cleanup_mode: str | None) -> Any:
    """pgserver's `get_server`, running `binaries` (see `_Cluster`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import PostgresServer

    pgdata.mkdir(exist_ok=True)
    known = PostgresServer._instances.get(pgdata)
    if known is not None:
        return known
    return _cluster_class(PostgresServer)(pgdata, binaries, cleanup_mode=cleanup_mode)


@cache
def _cluster_class(base: Any) -> Any:
    class _Cluster(base):  # type: ignore[misc]
        """pgserver's server with two changes: its commands run `binaries` (pgserver
        reads the module-level `POSTGRES_BIN_PATH` at each call, so it is swapped around
        the calls that start or stop this cluster), and a cluster it creates with
        binaries that ship `pg_stat_statements` preloads it from the first start."""

        def __init__(self, pgdata: Path, binaries: Binaries, **kwargs: Any) -> None:
            self.binaries = binaries
            with _running(binaries):
                super().__init__(pgdata, **kwargs)

        def ensure_pgdata_inited(self) -> None:
            created = not (self.pgdata / "PG_VERSION").exists()
            super().ensure_pgdata_inited()
            if created and self.binaries.statements:
                with (self.pgdata / "postgresql.conf").open("a") as conf:
                    conf.write(
                        f"\n# shelfwise: `shelfwise db top` reads {STATEMENTS_LIBRARY}\n"
                        f"shared_preload_libraries = '{STATEMENTS_LIBRARY}'\n"
                    )

        def _cleanup(self) -> None:
            with _running(self.binaries):
                super()._cleanup()

    return _Cluster


@contextmanager
def _running(binaries: Binaries) -> Iterator[None]:
    from pgserver import _commands

    before = _commands.POSTGRES_BIN_PATH
    _commands.POSTGRES_BIN_PATH = binaries.bin_dir
    try:
        yield
    finally:
        _commands.POSTGRES_BIN_PATH = before


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def create_statements_extension(url: str) -> bool:
    """`CREATE EXTENSION pg_stat_statements` in the database when the server preloads
    it; False (and nothing done) when it does not, e.g. on pgserver's build."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
        preloaded = [name.strip() for name in (row[0] if row else "").split(",")]
        if STATEMENTS_LIBRARY not in preloaded:
            return False
        conn.execute(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(STATEMENTS_LIBRARY))
        )
        return True


def ensure_database(admin_url: str, database: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
