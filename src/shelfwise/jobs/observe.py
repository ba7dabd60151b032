"""What a job run leaves behind: metrics, log lines, the last error, dead-letter alerts.

A Procrastinate *worker middleware* wraps every job. On failure it asks the task's retry
strategy — the same decision the worker is about to make — whether this was the last
try: if so the job is now a dead letter, so it counts, logs at error level and alerts.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from procrastinate import JobContext
from procrastinate.middleware import AsyncCallNext
from procrastinate.worker import Worker
from sqlalchemy import func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.events.relay import LAG_SQL
from shelfwise.jobs.models import JobProgress
from shelfwise.jobs.retry import JitteredBackoff
from shelfwise.jobs.runtime import JobRuntime, runtime_of
from shelfwise.observability.metrics import (
    JOB_DURATION,
    JOB_RETRIES,
    JOBS_DEAD,
    JOBS_FAILED,
    JOBS_OLDEST_AGE,
    JOBS_QUEUE_DEPTH,
    OUTBOX_LAG,
)

log = structlog.get_logger("shelfwise.jobs")
ERROR_CAP = 2000


def _will_retry(worker: Worker, context: JobContext, exc: BaseException) -> bool:
    task = worker.app.tasks.get(context.job.task_name)
    strategy = task.retry_strategy if task else None
    if isinstance(strategy, JitteredBackoff):
        return strategy.will_retry(context.job.attempts)
    return bool(strategy and strategy.get_retry_exception(exception=exc, job=context.job))


async def observe_job(call_next: AsyncCallNext, context: JobContext, worker: Worker) -> Any:
    job = context.job
    fields = {"job_id": job.id, "task": job.task_name, "attempt": job.attempts + 1}
    started = time.perf_counter()
    try:
        result = await call_next()
    except BaseException as exc:
        elapsed = time.perf_counter() - started
        retry = _will_retry(worker, context, exc)
        JOB_DURATION.labels(job.task_name, "retry" if retry else "failed").observe(elapsed)
        await _record_error(runtime_of(context), int(job.id or 0), exc)
        if retry:
            JOB_RETRIES.labels(job.task_name).inc()
            log.warning("job_failed_will_retry", error=type(exc).__name__, **fields)
        else:
            JOBS_FAILED.labels(job.task_name).inc()
            await runtime_of(context).alerts.raise_alert(
                "job_dead_lettered", error=f"{type(exc).__name__}: {exc}"[:500], **fields
            )
        raise
    JOB_DURATION.labels(job.task_name, "succeeded").observe(time.perf_counter() - started)
    log.info("job_succeeded", duration_ms=round((time.perf_counter() - started) * 1000), **fields)
    return result


async def _record_error(runtime: JobRuntime, job_id: int, exc: BaseException) -> None:
    message = f"{type(exc).__name__}: {exc}"[:ERROR_CAP]
    stmt = insert(JobProgress).values(job_id=job_id, last_error=message)
    stmt = stmt.on_conflict_do_update(
        index_elements=[JobProgress.job_id],
        set_={"last_error": message, "updated_at": func.clock_timestamp()},
    )
    try:
        async with runtime.db.sessions() as session, session.begin():
            await session.execute(stmt)
    except Exception as error:  # bookkeeping must never mask the job's own failure
        log.warning("job_error_not_recorded", job_id=job_id, error=type(error).__name__)


QUEUE_STATS_SQL = text(
    """
    SELECT j.queue_name,
           count(*) FILTER (WHERE j.status = 'todo') AS ready,
           coalesce(max(extract(epoch FROM now() - greatest(j.scheduled_at, d.at)))
                    FILTER (WHERE j.status = 'todo'), 0)::float8 AS oldest,
           count(*) FILTER (WHERE j.status = 'failed') AS dead
      FROM procrastinate_jobs AS j
      LEFT JOIN LATERAL (
           SELECT max(e.at) AS at FROM procrastinate_events AS e
            WHERE e.job_id = j.id AND e.type IN ('deferred', 'deferred_for_retry', 'retried')
      ) AS d ON true
     WHERE j.status = 'failed'
        OR (j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()))
     GROUP BY j.queue_name
    """
)


async def refresh_queue_gauges(session: AsyncSession) -> None:
    """Queue depth, oldest ready job and dead letters per queue, and the outbox lag, read
    from the database (so any process — API or worker — reports the same numbers)."""
    async with session.begin():
        rows = (await session.execute(QUEUE_STATS_SQL)).all()
        lag = await session.scalar(text(LAG_SQL))
    OUTBOX_LAG.set(float(lag or 0.0))
    for gauge in (JOBS_QUEUE_DEPTH, JOBS_OLDEST_AGE, JOBS_DEAD):
        gauge.clear()
    for queue, ready, oldest, dead in rows:
        JOBS_QUEUE_DEPTH.labels(queue).set(ready)
        JOBS_OLDEST_AGE.labels(queue).set(oldest)
        JOBS_DEAD.labels(queue).set(dead)
