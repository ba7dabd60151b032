"""Fixtures for tests that run Procrastinate jobs in-process: a worker runtime on the test
app's database, and the job app (a real Procrastinate app on the same database).

A test module overrides `job_clock` (default: the app's clock) or `job_alerts` (default:
no alert channel) to change what its jobs see."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from procrastinate import App

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.runtime import JobRuntime


@pytest.fixture
def job_clock(clock: FixedClock) -> FixedClock:
    return clock


@pytest.fixture
def job_alerts() -> Alerts:
    return Alerts(None)


@pytest.fixture
def runtime(ctx: AppContext, job_clock: FixedClock, job_alerts: Alerts) -> JobRuntime:
    settings = ctx.settings.model_copy(update={"worker_concurrency": 1, "worker_poll_seconds": 0.2})
    return JobRuntime(settings=settings, db=ctx.db, clock=job_clock, alerts=job_alerts)


@pytest.fixture
async def job_app(runtime: JobRuntime, database_url: str) -> AsyncIterator[App]:
    app = build_job_app(
        runtime.settings,
        database_url,
        clock=runtime.clock,
        rng=random.Random(7),
        pool_size=2,
        periodic_tasks=(),
    )
    async with app.open_async():
        yield app
