"""Fixtures for tests that run Procrastinate jobs in-process: a worker runtime on the test
app's database, and the job app (a real Procrastinate app on the same database).

A test module overrides `job_clock` (default: the app's clock) or `job_alerts` (default:
no alert channel) to change what its jobs see.

And for the event-bus tests: a private RabbitMQ node per test module that asks for one
(`rabbit`), and a `bus` (relay + publisher + consumers) on a fresh exchange per test."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from procrastinate import App

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.runtime import JobRuntime
from tests.broker_support import Bus, RabbitNode, running_node


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


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitNode]:
    with running_node() as node:
        yield node


@pytest.fixture
def exchange() -> str:
    return f"shelfwise.events.test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def bus(database_url: str, rabbit: RabbitNode, exchange: str) -> AsyncIterator[Bus]:
    running = Bus(database_url, rabbit, exchange)
    try:
        yield running
    finally:
        await running.close()
