"""Drills against a running `shelfwise serve` over HTTP (`shelfwise drill NAME --url`):
each makes its failure happen in the served process and must find the signal in that
process's `/metrics` and log file, so the HTTP form cannot rot silently either."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shelfwise.cli import app as cli_app
from shelfwise.context import AppContext
from shelfwise.drills.served_drills import SERVED_DRILLS, run_served
from shelfwise.identity.models import Role
from tests.redis_support import free_port
from tests.support import PASSWORD, make_user, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
QUICK_BUDGET_SECONDS = 20  # each drill, on the busy box

pytestmark = pytest.mark.e2e


@dataclass
class Served:
    url: str
    log: Path


@pytest.fixture
def served(database_url: str) -> Iterator[Served]:
    """`shelfwise serve` with thresholds low enough for the quick drills to trip them."""
    root = Path(tempfile.mkdtemp(prefix="shelfwise-drills-"))
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_DATA_DIR": str(root),
        "SHELFWISE_LOG_JSON": "true",
        "SHELFWISE_LOOP_LAG_SAMPLE_SECONDS": "0.02",
        "SHELFWISE_LOOP_BLOCKED_THRESHOLD_SECONDS": "0.15",
        "SHELFWISE_DB_SLOW_STATEMENT_MS": "5",
        "SHELFWISE_DB_CONNECTION_HELD_WARN_SECONDS": "0.3",
        "SHELFWISE_DB_POOL_SIZE": "2",
        "SHELFWISE_DB_MAX_OVERFLOW": "0",
        "SHELFWISE_DB_POOL_TIMEOUT_SECONDS": "0.3",
        "SHELFWISE_RATE_LIMIT_DEBUG": "1000/minute",
        "SHELFWISE_RATE_LIMIT_LIVE_CONNECT": "10/minute",
    }
    log = root / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(SHELFWISE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=root,  # no stray .env is picked up
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Served(f"http://127.0.0.1:{port}", log)
    finally:
        process.kill()
        process.wait(timeout=15)
        shutil.rmtree(root, ignore_errors=True)


async def _up(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:

        async def answers() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(answers, timeout=30, what="shelfwise serve")


async def test_drills_over_http_find_their_signal_in_the_served_process(
    served: Served, ctx: AppContext
) -> None:
    admin = await make_user(ctx, Role.ADMIN)
    await _up(served.url)
    for name in SERVED_DRILLS:
        started = time.monotonic()
        outcome = await run_served(
            name, served.url, (admin["email"], PASSWORD), log_file=served.log, quick=True
        )
        assert outcome.seen, f"{name}: {outcome.signal} did not appear: {outcome.evidence}"
        assert time.monotonic() - started < QUICK_BUDGET_SECONDS, name
    # The log lines came from the served process's own log file, not this one's.
    text = served.log.read_text(errors="replace")
    assert "drill_blocks_the_loop" in text
    assert "hold_connection_across_slow_work" in text
    # And the command itself, as an operator types it.
    command = [str(SHELFWISE), "drill", "blocked-loop", "--quick", "--url", served.url]
    credentials = ["--admin-email", admin["email"], "--admin-password", PASSWORD]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, *credentials, "--log-file", str(served.log)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SHELFWISE_ENV": "test", "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "signal shelfwise_event_loop_blocked_total: seen" in done.stdout


def test_the_url_mode_refuses_remote_hosts_and_in_process_only_drills(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELFWISE_ENV", "test")
    remote = CliRunner().invoke(cli_app, ["drill", "blocked-loop", "--url", "http://10.1.2.3"])
    assert remote.exit_code == 2
    assert "only loopback" in remote.output
    in_process = CliRunner().invoke(cli_app, ["drill", "deadlock", "--url", "http://127.0.0.1:9"])
    assert in_process.exit_code == 2
    assert "in-process only" in in_process.output
    monkeypatch.setenv("SHELFWISE_ENV", "production")
    refused = CliRunner().invoke(cli_app, ["drill", "slow-query", "--url", "http://127.0.0.1:9"])
    assert refused.exit_code == 2
    assert "refused in production" in refused.output
