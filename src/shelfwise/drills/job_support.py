"""A Procrastinate app and in-process workers for the job drills, on the drill's database."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from procrastinate import App
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.drills.system import DrillSystem
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.defer import defer_in_transaction
from shelfwise.jobs.observe import refresh_queue_gauges
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.worker import worker_options

EXTRA = "shelfwise.drills.job_tasks"


@asynccontextmanager
async def job_app(system: DrillSystem, **overrides: Any) -> AsyncIterator[tuple[App, JobRuntime]]:
    """The clock stands a day back, so every retry the backoff schedules is due at once."""
    settings = system.ctx.settings.model_copy(
        update={
            "jobs_extra_modules": [EXTRA],
            "worker_concurrency": 1,
            "worker_poll_seconds": 0.1,
            "worker_shutdown_timeout_seconds": 0.0,
            **overrides,
        }
    )
    clock = FixedClock(datetime.now(UTC) - timedelta(days=1))
    runtime = JobRuntime(settings=settings, db=system.ctx.db, clock=clock, alerts=Alerts(None))
    app = build_job_app(
        settings,
        system.database_url,
        clock=clock,
        rng=random.Random(7),  # noqa: S311 (retry jitter, reproducible)
        periodic_tasks=(),
    )
    async with app.open_async():
        yield app, runtime


async def drain(app: App, runtime: JobRuntime, name: str, queues: list[str]) -> None:
    """A worker that runs until no job of `queues` is due, then returns."""
    options = worker_options(runtime, name)
    options["wait"] = False
    options["listen_notify"] = False
    options["queues"] = queues
    await app.run_worker_async(**options)


async def defer(system: DrillSystem, task_name: str, **args: Any) -> int:
    async with system.ctx.db.sessions() as session, session.begin():
        return await defer_in_transaction(session, task_name, args)


async def job_status(system: DrillSystem, job_id: int) -> tuple[str, int]:
    async with system.ctx.db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status::text, attempts FROM procrastinate_jobs WHERE id = :id"),
                {"id": job_id},
            )
        ).one()
    return str(row[0]), int(row[1])


async def refresh_gauges(system: DrillSystem) -> None:
    async with system.ctx.db.sessions() as session:
        await refresh_queue_gauges(session)
