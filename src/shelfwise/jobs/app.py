"""Building the Procrastinate `App` from the task registry and settings."""

from __future__ import annotations

import random
from collections.abc import Collection

from procrastinate import App, PsycopgConnector

from shelfwise.availability import CONNECT_TIMEOUT_SECONDS, RECONNECT_GIVE_UP_SECONDS
from shelfwise.clock import Clock
from shelfwise.config import Settings
from shelfwise.db import libpq_url
from shelfwise.jobs.registry import TaskSpec, load_tasks
from shelfwise.jobs.retry import JitteredBackoff


def _cron(spec: TaskSpec, settings: Settings) -> str | None:
    if spec.cron_setting:
        return str(getattr(settings, spec.cron_setting))
    return spec.cron


def build_job_app(
    settings: Settings,
    database_url: str,
    *,
    clock: Clock,
    rng: random.Random | None = None,
    pool_size: int = 4,
    periodic_tasks: Collection[str] | None = None,
) -> App:
    """A Procrastinate app on Shelfwise's database, with every registered task.

    `periodic_tasks` limits which schedules are installed (None: all); tests use it to run
    a worker without the production crons firing in the middle of an assertion."""
    connector = PsycopgConnector(
        conninfo=libpq_url(database_url),
        min_size=1,
        max_size=pool_size,
        reconnect_timeout=RECONNECT_GIVE_UP_SECONDS,
        # Not psycopg_pool's 30 s: when the database goes away, Procrastinate's own stop
        # (unregistering the worker) waits this long before `run_jobs` can restart it.
        timeout=settings.db_pool_timeout_seconds,
        kwargs={"application_name": "shelfwise-worker", "connect_timeout": CONNECT_TIMEOUT_SECONDS},
    )
    app = App(connector=connector)
    for spec in load_tasks(settings.jobs_extra_modules).values():
        queueing_lock = spec.name if spec.singleton else None
        registered = app.task(
            name=spec.name,
            queue=spec.queue,
            pass_context=True,
            retry=JitteredBackoff(spec.backoff, clock=clock, rng=rng),
            lock=queueing_lock if spec.exclusive else None,
            queueing_lock=queueing_lock,
        )(spec.function)
        wanted = periodic_tasks is None or spec.name in periodic_tasks
        if wanted and (cron := _cron(spec, settings)):
            app.periodic(cron=cron, periodic_id=spec.name)(registered)
    return app
