"""Maintenance tasks: expiry, pruning, reconciliation, reports, stalled-job recovery.

Every task is idempotent — a retry, a duplicate run or a run after a crash does no harm —
because Procrastinate delivers at least once. Periodic tasks are `singleton`: a queueing
lock keeps at most one waiting, and a lock keeps two from running at once.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from procrastinate import JobContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shelfwise.broker.inbox import prune_inbox
from shelfwise.events.outbox import prune_published_events
from shelfwise.idempotency.service import prune_idempotency_keys
from shelfwise.identity.pruning import prune_expired_credentials
from shelfwise.inventory.low_stock import report_low_stock
from shelfwise.jobs.registry import task
from shelfwise.jobs.retry import Backoff
from shelfwise.jobs.runtime import runtime_of
from shelfwise.observability.metrics import (
    LEDGER_DRIFT_LEVELS,
    LOW_STOCK_LEVELS,
    STALLED_JOBS_RECOVERED,
)
from shelfwise.orders.expiry import expire_reservations
from shelfwise.reconciliation import reconcile_all

log = structlog.get_logger("shelfwise.jobs.tasks")

MAINTENANCE = "maintenance"
ORDERS = "orders"
QUICK = Backoff(attempts=5, base_seconds=2, cap_seconds=60)
PATIENT = Backoff(attempts=4, base_seconds=30, cap_seconds=1800)


@task("expire_reservations", queue=ORDERS, backoff=QUICK, cron="* * * * *", singleton=True)
async def expire_reservations_periodic(context: JobContext, timestamp: int) -> int:
    """Every minute, release every reservation past its `expires_at`, exactly once.

    One batched sweep rather than one job per order: a job per order cost a queue row
    and a worker wake-up on the hottest write path (docs/decisions/0013). A reservation
    is released up to a minute late; confirming it is refused from `expires_at` on."""
    rt = runtime_of(context)
    async with rt.db.sessions() as session:
        return await expire_reservations(session, now=rt.clock.now())


@task("prune_idempotency_keys", queue=MAINTENANCE, backoff=QUICK, cron="7 * * * *", singleton=True)
async def prune_idempotency_keys_periodic(context: JobContext, timestamp: int) -> int:
    rt = runtime_of(context)
    cutoff = rt.clock.now() - timedelta(hours=rt.settings.idempotency_retention_hours)
    async with rt.db.sessions() as session:
        pruned = await prune_idempotency_keys(session, older_than=cutoff)
    log.info("idempotency_keys_pruned", count=pruned)
    return pruned


@task("prune_auth_tokens", queue=MAINTENANCE, backoff=QUICK, cron="17 * * * *", singleton=True)
async def prune_auth_tokens(context: JobContext, timestamp: int) -> dict[str, int]:
    rt = runtime_of(context)
    async with rt.db.sessions() as session:
        pruned = await prune_expired_credentials(session, now=rt.clock.now())
    log.info("auth_tokens_pruned", families=pruned.refresh_families, sessions=pruned.sessions)
    return {"refresh_families": pruned.refresh_families, "sessions": pruned.sessions}


@task("prune_outbox", queue=MAINTENANCE, backoff=QUICK, cron="27 * * * *", singleton=True)
async def prune_outbox(context: JobContext, timestamp: int) -> int:
    rt = runtime_of(context)
    cutoff = rt.clock.now() - timedelta(days=rt.settings.outbox_retention_days)
    async with rt.db.sessions() as session:
        return await prune_published_events(session, older_than=cutoff)


@task("prune_broker_inbox", queue=MAINTENANCE, backoff=QUICK, cron="47 * * * *", singleton=True)
async def prune_broker_inbox(context: JobContext, timestamp: int) -> int:
    """Inbox rows of event-bus consumers past `broker_inbox_retention_days` (broker/inbox.py)."""
    rt = runtime_of(context)
    cutoff = rt.clock.now() - timedelta(days=rt.settings.broker_inbox_retention_days)
    async with rt.db.sessions() as session:
        pruned = await prune_inbox(session, older_than=cutoff)
    log.info("broker_inbox_pruned", count=pruned)
    return pruned


@task("prune_finished_jobs", queue=MAINTENANCE, backoff=QUICK, cron="37 4 * * *", singleton=True)
async def prune_finished_jobs(context: JobContext, timestamp: int) -> None:
    """Succeeded, cancelled and aborted jobs go; dead letters stay until someone acts."""
    hours = runtime_of(context).settings.finished_jobs_retention_hours
    await context.app.job_manager.delete_old_jobs(
        nb_hours=hours, include_failed=False, include_cancelled=True, include_aborted=True
    )


@task("reconcile_ledger", queue=MAINTENANCE, backoff=PATIENT, cron="30 3 * * *", singleton=True)
async def reconcile_ledger(context: JobContext, timestamp: int) -> dict[str, int]:
    """Nightly: every counter must be explained by the ledger. Drift is an alert, not a
    failure — retrying would not fix it, a human must look."""
    rt = runtime_of(context)
    async with rt.db.sessions() as session:
        report = await reconcile_all(session)
    drift = len(report.ledger) + len(report.reservations)
    LEDGER_DRIFT_LEVELS.set(drift)
    if drift:
        await rt.alerts.raise_alert(
            "ledger_drift",
            ledger_levels=[d.stock_level_id for d in report.ledger][:50],
            reservation_levels=[d.stock_level_id for d in report.reservations][:50],
        )
    return {"ledger": len(report.ledger), "reservations": len(report.reservations)}


@task("report_low_stock", queue=MAINTENANCE, backoff=QUICK, cron="0 6 * * *", singleton=True)
async def report_low_stock_daily(context: JobContext, timestamp: int) -> int:
    rt = runtime_of(context)
    threshold = rt.settings.low_stock_threshold
    async with rt.db.sessions() as session:
        low = await report_low_stock(session, threshold=threshold)
    LOW_STOCK_LEVELS.set(low)
    log.info("low_stock_report", levels=low, threshold=threshold)
    return low


@task(
    "recover_stalled_jobs",
    queue=MAINTENANCE,
    backoff=QUICK,
    cron_setting="jobs_stalled_check_cron",
    singleton=True,
    # Never a `lock`: if the worker running this died, a lock held by its 'doing' job
    # would block every later recovery — the one job that must always be able to run.
    exclusive=False,
)
async def recover_stalled_jobs(context: JobContext, timestamp: int) -> list[int]:
    """Procrastinate's own mechanism: workers heartbeat; jobs held by a worker silent for
    longer than the threshold (killed, frozen, partitioned) go back to the queue."""
    rt = runtime_of(context)
    seconds = rt.settings.worker_stalled_after_seconds
    manager = context.app.job_manager
    recovered: list[int] = []
    for job in await manager.get_stalled_jobs(seconds_since_heartbeat=seconds):
        if job.id is None or job.id == context.job.id:
            continue
        guard = {"id": job.id, "worker_id": job.worker_id}
        try:
            async with rt.db.sessions() as session, session.begin():
                requeued = await session.scalar(REQUEUE_IF_STILL_STALLED, guard)
        except IntegrityError:
            # A singleton (periodic) job whose next run is already queued: a second copy
            # would break its queueing lock, and running it twice is pointless. Retire it.
            async with rt.db.sessions() as session, session.begin():
                await session.execute(ABORT_IF_STILL_STALLED, guard)
            log.warning("stalled_job_aborted", job_id=job.id, task=job.task_name)
            continue
        if requeued:
            recovered.append(job.id)
            log.warning("stalled_job_requeued", job_id=job.id, task=job.task_name)
    await manager.prune_stalled_workers(seconds)
    STALLED_JOBS_RECOVERED.inc(len(recovered))
    return recovered


# Two recoveries may list the same stalled job. Lock the row and re-check that it is
# still held by the same (dead) worker, so a job another worker already picked up again
# is never reset under it.
REQUEUE_IF_STILL_STALLED = text(
    """
    WITH still_stalled AS (
        SELECT id FROM procrastinate_jobs
         WHERE id = :id AND status = 'doing' AND worker_id IS NOT DISTINCT FROM :worker_id
           FOR UPDATE
    )
    SELECT count(procrastinate_retry_job_v2(id, now(), NULL, NULL, NULL)) FROM still_stalled
    """
)
ABORT_IF_STILL_STALLED = text(
    """
    WITH still_stalled AS (
        SELECT id FROM procrastinate_jobs
         WHERE id = :id AND status = 'doing' AND worker_id IS NOT DISTINCT FROM :worker_id
           FOR UPDATE
    )
    SELECT count(procrastinate_finish_job_v1(id, 'aborted', false)) FROM still_stalled
    """
)
