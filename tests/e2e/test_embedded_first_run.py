"""The suite's first run: several processes creating the embedded cluster at once.

On a fresh clone every pytest-xdist worker calls `start_embedded` on the same empty
directory at the same moment. Two real processes do it here, released together (both
block on stdin until the parent closes it), and both must get a working database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import sys
from pathlib import Path
import psycopg
from shelfwise.embedded import start_embedded

sys.stdin.read()  # released together with the other initializer
url = start_embedded(Path(sys.argv[1]), database="shelfwise_race")
with psycopg.connect(url) as conn:
    print(conn.execute("SELECT current_database()").fetchone()[0])
"""


def _stop_leftover_server(pgdata: Path) -> None:
    # The last process to exit stops the cluster; if a child died first, make sure.
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().splitlines()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)  # fast shutdown


@pytest.mark.e2e
def test_two_initializers_at_once_on_a_fresh_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    logs = [(tmp_path / f"out{i}", tmp_path / f"err{i}") for i in range(2)]
    children = []
    for out, err in logs:
        with out.open("w") as stdout, err.open("w") as stderr:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, str(data_dir)],
                    stdin=subprocess.PIPE,
                    stdout=stdout,
                    stderr=stderr,
                )
            )
    try:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()  # both start now
        for child, (out, err) in zip(children, logs, strict=True):
            assert child.wait(timeout=90) == 0, err.read_text()[-2000:]
            assert out.read_text().strip() == "shelfwise_race"
        assert (data_dir / "pg" / "PG_VERSION").exists()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
        _stop_leftover_server(data_dir / "pg")
