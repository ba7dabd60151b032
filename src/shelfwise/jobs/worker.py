"""`shelfwise worker`: the Procrastinate worker and the outbox relay in one process.

Structured concurrency: one TaskGroup owns the worker, the relay and the gauge refresher.
If any of them crashes, the others are cancelled and the process exits non-zero (a
supervisor restarts it) instead of limping on half-alive. A database outage is not a
crash: the relay reconnects, and Procrastinate's worker, which stops itself when its
connections fail, is started again by `run_jobs` once the database answers.

Shutdown (SIGTERM/SIGINT sets `stop`): the worker stops fetching, waits up to
`worker_shutdown_timeout_seconds` for running jobs, then aborts the rest, which go back
to the queue through their retry policy. The relay finishes its current transaction.
A `kill -9` skips all of this; then the heartbeat goes stale and `recover_stalled_jobs`
re-queues the job on another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time

import structlog
from procrastinate import App
from procrastinate.app import WorkerOptions

from shelfwise.broker.publisher import BrokerPublisher
from shelfwise.broker.wiring import publisher_from_settings
from shelfwise.clock import Clock, SystemClock
from shelfwise.config import Settings
from shelfwise.db import Database, libpq_url, open_database
from shelfwise.events.relay import Relay, RelayConfig
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.observe import observe_job, refresh_queue_gauges
from shelfwise.jobs.runtime import RUNTIME_KEY, JobRuntime
from shelfwise.live.feeds import redis_publisher
from shelfwise.observability.activity import watch_database
from shelfwise.observability.loop import LoopWatch
from shelfwise.observability.metrics import INSTANCE_INFO, JOB_WORKER_RESTARTS
from shelfwise.observability.trace_jobs import trace_job
from shelfwise.webhooks.tasks import FanoutWake, run_fanout

log = structlog.get_logger("shelfwise.worker")
GAUGE_REFRESH_SECONDS = 15.0
# Restarting Procrastinate after it stopped on its own (run_jobs).
JOBS_RESTART_FIRST_SECONDS = 0.5
JOBS_RESTART_MAX_SECONDS = 10.0
JOBS_HEALTHY_RUN_SECONDS = 60.0


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def _refresh_gauges(db: Database, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with db.sessions() as session:
                await refresh_queue_gauges(session)
        except Exception as exc:  # a metrics hiccup must not stop the worker
            log.warning("queue_gauges_failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), GAUGE_REFRESH_SECONDS)


async def run_worker(
    settings: Settings,
    database_url: str,
    stop: asyncio.Event,
    *,
    name: str | None = None,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> None:
    """Run until `stop` is set (or a component fails)."""
    name = name or worker_name()
    clock = clock or SystemClock()
    db = open_database(settings, database_url)
    runtime = JobRuntime(
        settings=settings,
        db=db,
        clock=clock,
        alerts=Alerts(settings.jobs_alert_webhook_url, timeout=settings.jobs_alert_timeout_seconds),
    )
    # Procrastinate LISTENs and the relay holds a session advisory lock: both need a
    # session of their own, so behind pgbouncer they take the direct DSN.
    direct_url = settings.direct_url(database_url)
    job_app = build_job_app(settings, direct_url, clock=clock, rng=rng)
    fanout_wake = FanoutWake()
    relay = Relay(
        libpq_url(direct_url),
        RelayConfig(
            batch_size=settings.relay_batch_size, poll_interval=settings.relay_poll_seconds
        ),
        name=name,
        after_publish=fanout_wake.after_publish(
            redis_publisher(settings.redis_url) if settings.redis_url else None
        ),
    )
    # Off unless SHELFWISE_BROKER_URL is set; one active across workers, like the relay.
    publisher = publisher_from_settings(
        settings, direct_url, name=name, alerts=runtime.alerts, rng=rng
    )
    INSTANCE_INFO.labels(instance_id=settings.instance_name, role="worker").set(1)
    log.info("worker_starting", worker=name, tasks=sorted(job_app.tasks))
    try:
        async with job_app.open_async(), LoopWatch.from_settings(settings):
            await _supervise(job_app, relay, runtime, stop, name, fanout_wake, publisher)
    finally:
        await db.dispose()
        log.info("worker_stopped", worker=name)


def worker_options(runtime: JobRuntime, name: str) -> WorkerOptions:
    """Procrastinate worker options from settings (shared with the tests' in-process workers)."""
    settings = runtime.settings
    return WorkerOptions(
        name=name,
        concurrency=settings.worker_concurrency,
        install_signal_handlers=False,
        fetch_job_polling_interval=settings.worker_poll_seconds,
        abort_job_polling_interval=settings.worker_poll_seconds,
        shutdown_graceful_timeout=settings.worker_shutdown_timeout_seconds,
        update_heartbeat_interval=settings.worker_heartbeat_seconds,
        stalled_worker_timeout=settings.worker_stalled_after_seconds,
        additional_context={RUNTIME_KEY: runtime},
        # Tracing outermost: the job log lines carry its trace id.
        worker_middleware=[trace_job, observe_job],
    )


async def run_jobs(
    job_app: App,
    runtime: JobRuntime,
    name: str,
    stop: asyncio.Event,
    *,
    first_delay: float = JOBS_RESTART_FIRST_SECONDS,
    max_delay: float = JOBS_RESTART_MAX_SECONDS,
) -> None:
    """Procrastinate's worker, started again whenever it stops on its own.

    Procrastinate stops its worker when one of its side tasks fails (the LISTEN
    connection, the heartbeat, the periodic deferrer), which is exactly what a database
    restart does to all of them. Exiting would leave jobs, cron and webhooks stopped until
    a person restarted the process; instead this probes the database (every `first_delay`
    seconds, doubling up to `max_delay`) and starts Procrastinate again once it answers.
    The new run registers a new worker id; a job the old run left in `doing` is re-queued
    by `recover_stalled_jobs` once its heartbeat is stale, like a killed worker's.
    Cancellation is the graceful stop.
    """
    quick_failures = 0  # runs in a row that ended soon after starting
    while not stop.is_set():
        started = time.monotonic()
        try:
            await job_app.run_worker_async(**worker_options(runtime, name))
            reason = "stopped"
        except Exception as exc:  # connector errors while the database is gone
            reason = type(exc).__name__
        if stop.is_set():
            return
        JOB_WORKER_RESTARTS.inc()
        log.warning("job_worker_stopped", worker=name, reason=reason)
        ran_briefly = time.monotonic() - started < JOBS_HEALTHY_RUN_SECONDS
        quick_failures = quick_failures + 1 if ran_briefly else 0
        # A run that keeps failing soon after starting is restarted less eagerly.
        delay = min(first_delay * 2**quick_failures, max_delay)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set() or await runtime.db.breaker.reachable():
                break
            log.info("job_worker_waiting_for_database", worker=name, retry_in=delay)
            delay = min(delay * 2, max_delay)
        if not stop.is_set():
            log.info("job_worker_restarting", worker=name)


async def _supervise(
    job_app: App,
    relay: Relay,
    runtime: JobRuntime,
    stop: asyncio.Event,
    name: str,
    fanout_wake: FanoutWake,
    publisher: BrokerPublisher | None = None,
) -> None:
    async with asyncio.TaskGroup() as group:
        jobs = group.create_task(
            run_jobs(job_app, runtime, name, stop), name="procrastinate-worker"
        )
        # It restarts Procrastinate itself; should it still end, stop the rest too.
        jobs.add_done_callback(lambda _: stop.set())
        group.create_task(relay.run(stop), name="outbox-relay")
        if publisher is not None:
            group.create_task(publisher.run(stop), name="broker-publisher")
        group.create_task(_refresh_gauges(runtime.db, stop), name="queue-gauges")
        group.create_task(
            watch_database(runtime.db, runtime.settings, stop), name="database-gauges"
        )
        group.create_task(
            run_fanout(runtime.db, runtime.settings, stop, fanout_wake), name="webhook-fanout"
        )
        await stop.wait()
        log.info("worker_stopping", worker=name)
        # Procrastinate turns cancellation into a graceful stop: no new fetches, running
        # jobs get `shutdown_graceful_timeout` to finish.
        jobs.cancel()
