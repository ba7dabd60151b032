"""What a running task may use: the database, settings, the clock, alerting."""

from __future__ import annotations

from dataclasses import dataclass

from procrastinate import JobContext

from shelfwise.clock import Clock
from shelfwise.config import Settings
from shelfwise.db import Database
from shelfwise.jobs.alerts import Alerts

RUNTIME_KEY = "shelfwise"


@dataclass(frozen=True, slots=True)
class JobRuntime:
    settings: Settings
    db: Database
    clock: Clock
    alerts: Alerts


def runtime_of(context: JobContext) -> JobRuntime:
    """The worker passes the runtime in Procrastinate's `additional_context`."""
    runtime = context.additional_context[RUNTIME_KEY]
    assert isinstance(runtime, JobRuntime)
    return runtime
