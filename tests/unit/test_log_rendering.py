"""The log line's cheaper parts (`observability/logging.py`) write what structlog's own
would: the same timestamp format, the same JSON for the same event."""

from __future__ import annotations

import datetime
import io
import json
import logging
import re
import sys
import uuid
from typing import Any
from unittest import mock

import pytest
import structlog

from shelfwise.config import Environment, Settings
from shelfwise.observability import logging as shelfwise_logging
from shelfwise.observability.logging import IsoTimestamp, configure_logging

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z$")


def test_the_timestamp_has_structlogs_format_and_time() -> None:
    ours = IsoTimestamp()(None, "info", {})["timestamp"]
    theirs = structlog.processors.TimeStamper(fmt="iso", utc=True)(None, "info", {})
    assert ISO_UTC.match(ours)
    assert ISO_UTC.match(theirs["timestamp"])
    parse = datetime.datetime.fromisoformat
    gap = parse(theirs["timestamp"]) - parse(ours)
    assert datetime.timedelta(0) <= gap < datetime.timedelta(seconds=1)


def test_a_whole_second_has_no_fraction_and_each_second_its_own_text() -> None:
    stamp = IsoTimestamp()
    whole = 1_796_560_878 * 1_000_000_000  # 2026-12-06T12:41:18Z
    with mock.patch.object(shelfwise_logging.time, "time_ns", return_value=whole):
        assert stamp(None, "info", {})["timestamp"] == "2026-12-06T12:41:18Z"
    with mock.patch.object(shelfwise_logging.time, "time_ns", return_value=whole + 1_909_974_123):
        assert stamp(None, "info", {})["timestamp"] == "2026-12-06T12:41:19.909974Z"


class Custom:
    def __structlog__(self) -> dict[str, int]:
        return {"custom": 1}


def test_the_json_line_is_structlogs() -> None:
    event: dict[str, Any] = {
        "event": "request",
        "status": 200,
        "duration_ms": 1.25,
        "id": uuid.UUID(int=7),
        "custom": Custom(),
        "text": 'naïve "quoted"',
    }
    ours = structlog.processors.JSONRenderer(serializer=shelfwise_logging._dumps)
    theirs = structlog.processors.JSONRenderer()
    line = ours(None, "info", dict(event))
    assert line == theirs(None, "info", dict(event))
    assert json.loads(line)["custom"] == {"custom": 1}


def test_logging_configured_under_a_swapped_stderr_writes_to_the_current_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A command run in-process by typer's CliRunner configures logging while
    `sys.stderr` is the runner's stand-in, closed afterwards: the relay's next log line
    must not raise on it (it killed the relay task of the next test module)."""
    stand_in = io.StringIO()
    settings = Settings(_env_file=None, env=Environment.TEST)  # type: ignore[call-arg]
    saved, root = structlog.get_config(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with mock.patch.object(sys, "stderr", stand_in):
            configure_logging(settings)
            structlog.get_logger("test").info("while_swapped")
        stand_in.close()
        structlog.get_logger("test").info("after_close")
        logging.getLogger("test.stdlib").warning("stdlib_after_close")
        written = capsys.readouterr().err
        assert re.search(r"\bafter_close\b", written)
        assert re.search(r"\bstdlib_after_close\b", written)
    finally:  # as it was: other tests in this process keep their logging
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
