"""Every drill, in quick mode, on the test's own database: its signal must actually appear
(the metric moved, the log line was written), so a drill cannot rot silently."""

from __future__ import annotations

import time

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
