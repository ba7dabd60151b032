"""Every drill, in quick mode, on the test's own database: its signal must actually appear
(the metric moved, the log line was written), so a drill cannot rot silently."""

from __future__ import annotations

import time

import psycopg
import pytest
from typer.testing import CliRunner

from shelfwise.cli import app as cli_app
from shelfwise.config import Settings
from shelfwise.drills.registry import DRILLS
from shelfwise.drills.runner import run_drill

QUICK_BUDGET_SECONDS = 20  # each; all of them together stay well under two minutes


@pytest.mark.parametrize("name", list(DRILLS))
async def test_the_drill_shows_its_signal(name: str, settings: Settings) -> None:
    started = time.monotonic()
    outcome = await run_drill(DRILLS[name], settings, quick=True)
    assert outcome.seen, f"{name}: {outcome.signal} did not appear: {outcome.evidence}"
    assert outcome.look_at
    assert outcome.fix
    assert time.monotonic() - started < QUICK_BUDGET_SECONDS


def _drill_databases(server_url: str) -> set[str]:
    with psycopg.connect(server_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'shelfwise_drill_%'"
        ).fetchall()
    return {row[0] for row in rows}


def test_the_command_runs_on_a_scratch_database_and_drops_it(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELFWISE_ENV", "test")
    before = _drill_databases(server_url)
    result = CliRunner().invoke(
        cli_app, ["drill", "lost-update", "--quick", "--server-url", server_url]
    )
    assert result.exit_code == 0, result.output
    assert "signal" in result.output
    assert "seen" in result.output
    assert "fix:" in result.output
    assert _drill_databases(server_url) <= before


def test_drills_are_refused_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFWISE_ENV", "production")
    result = CliRunner().invoke(cli_app, ["drill", "blocked-loop", "--quick"])
    assert result.exit_code == 2
    assert "refused in production" in result.output


def test_the_list_names_every_drill() -> None:
    result = CliRunner().invoke(cli_app, ["drill", "--list"])
    assert result.exit_code == 0
    for name in DRILLS:
        assert name in result.output
