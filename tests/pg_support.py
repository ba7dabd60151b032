"""A throw-away PostgreSQL server that a test may stop and start (`pg_ctl stop -m immediate`).

The suite's shared server must never be stopped, so a failure test gets its own: initdb
of a fresh cluster under a temporary directory with the binaries the `pgserver` wheel
ships (the same ones the suite's embedded server runs), listening on a free TCP port on
127.0.0.1. As root (CI containers), the server runs as pgserver's system user, as
initdb refuses root.

`bin_dir` picks other binaries: pgserver's build has no contrib modules, so a test that
needs one (e.g. `pg_stat_statements`) runs Debian's PostgreSQL 15
(`DEBIAN_PG15_BIN`, package postgresql-15) with `settings`; `require_bin_dir`
skips without it, and fails under SHELFWISE_TEST_REQUIRE=all.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.redis_support import free_port

BIN = (
    Path(__file__).resolve().parents[1]
    / ".venv/lib/python3.11/site-packages/pgserver/pginstall/bin"
)
SYSTEM_USER = "pgserver"  # what pgserver itself runs as under root
DEBIAN_PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def require_bin_dir(bin_dir: Path, package: str) -> Path:
    """`bin_dir` when it holds a server, or skip — unless SHELFWISE_TEST_REQUIRE=all."""
    if all((bin_dir / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
        return bin_dir
    reason = f"no PostgreSQL server in {bin_dir} (apt-get install {package})"
    if os.environ.get("SHELFWISE_TEST_REQUIRE") == "all":
        pytest.fail(reason + " and SHELFWISE_TEST_REQUIRE=all")
    pytest.skip(reason)


class PostgresCommandFailed(RuntimeError):
    """initdb or pg_ctl failed; the message carries its stderr and the server log's tail."""


class DisposablePostgres:
    def __init__(
        self, root: Path, bin_dir: Path = BIN, settings: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.settings = dict(settings or {})
        self.data = root / "data"
        self.port = free_port()
        self.log = root / "postgres.log"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        options: dict[str, Any] = {}
        if os.geteuid() == 0:
            options["user"] = SYSTEM_USER
        done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **options)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            stderr = done.stderr.decode(errors="replace")
            raise PostgresCommandFailed(
                f"{Path(args[0]).name} exited {done.returncode}: {stderr}{log}"
            )

    def init(self) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SYSTEM_USER)  # created by pgserver on first use as root
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            # fsync off: only an OS crash loses what the kernel holds, and this is a test.
            # synchronous_commit stays on: an acknowledged commit must survive the
            # immediate stop (with it off, a crash loses the last ~200 ms of commits).
            " -c fsync=off"
        ) + "".join(f" -c {name}={value}" for name, value in self.settings.items())
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-o",
            options,
        )

    def stop_immediately(self) -> None:
        """No shutdown checkpoint, every connection cut: what a crash or a kill looks like."""
        self._run(
            str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w"
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a constant name from the test
        return self.url(name)


def _ensure_system_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "-s", "/bin/false", SYSTEM_USER], check=True)


@contextmanager
def disposable_postgres(
    bin_dir: Path = BIN, settings: dict[str, str] | None = None
) -> Iterator[DisposablePostgres]:
    """A running server (`settings`: extra `-c name=value`); stopped (immediately) and
    deleted afterwards, also on failure."""
    _ensure_system_user()
    # Under /tmp rather than pytest's tmp_path: its parents are 0700 root-owned, which
    # the server's own user could not traverse.
    root = Path(tempfile.mkdtemp(prefix="shelfwise-pg-"))
    root.chmod(0o755)
    server = DisposablePostgres(root, bin_dir, settings)
    try:
        server.init()
        for attempt in range(3):
            try:
                server.start()
                break
            except PostgresCommandFailed:
                # The free port may have been taken by someone else meanwhile: another.
                if attempt == 2:
                    raise
                server.port = free_port()
        yield server
    finally:
        if server.running():
            # Already gone is fine: the directory goes anyway.
            with contextlib.suppress(PostgresCommandFailed):
                server.stop_immediately()
        shutil.rmtree(root, ignore_errors=True)
