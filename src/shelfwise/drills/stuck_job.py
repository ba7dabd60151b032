"""stuck-job: a job hangs, the queue behind it ages; once its worker is presumed dead,
stalled-job recovery puts the job back in the queue."""

from __future__ import annotations

import asyncio
import contextlib
import time

from procrastinate import App

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.job_support import defer, drain, job_app, job_status, refresh_gauges
from shelfwise.drills.job_tasks import DRILL_QUEUE
from shelfwise.drills.system import DrillSystem
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.tasks import MAINTENANCE
from shelfwise.jobs.worker import worker_options

# The worker froze (or was killed): its heartbeat stops. The drill ages it by hand
# instead of waiting out worker_stalled_after_seconds.
FREEZE_SQL = "UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour'"


async def _until_doing(system: DrillSystem, job_id: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if (await job_status(system, job_id))[0] == "doing":
            return True
        await asyncio.sleep(0.05)
    return False


async def _recover(system: DrillSystem, app: App, runtime: JobRuntime) -> None:
    """Run Shelfwise's own periodic recovery task once (the worker runs it every minute)."""
    await app.configure_task("recover_stalled_jobs").defer_async(timestamp=int(time.time()))
    await drain(app, runtime, "drill-recovery", [MAINTENANCE])


async def run(system: DrillSystem, quick: bool) -> Outcome:
    recovered = metric("shelfwise_jobs_stalled_recovered_total")
    async with job_app(system, worker_stalled_after_seconds=1.0) as (app, runtime):
        hung = await defer(system, "drill_sync_partner", seconds=3600.0)
        options = worker_options(runtime, "drill-frozen")
        options["listen_notify"] = False
        options["queues"] = [DRILL_QUEUE]
        worker = asyncio.create_task(app.run_worker_async(**options))
        try:
            running = await _until_doing(system, hung, time.monotonic() + 10)
            waiting = await defer(system, "drill_send_receipt")
            await asyncio.sleep(0.5 if quick else 3.0)  # the receipt waits behind the hang
            await refresh_gauges(system)
            depth = metric("shelfwise_jobs_queue_depth", queue=DRILL_QUEUE)
            age = metric("shelfwise_jobs_oldest_ready_age_seconds", queue=DRILL_QUEUE)
            async with await system.connect() as conn:
                await conn.execute(FREEZE_SQL)
            await _recover(system, app, runtime)
            requeued = await job_status(system, hung)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        receipt = await job_status(system, waiting)
    moved = metric("shelfwise_jobs_stalled_recovered_total") - recovered
    return Outcome(
        signal="shelfwise_jobs_oldest_ready_age_seconds",
        seen=running and depth >= 1 and age > 0 and moved >= 1 and requeued[0] == "todo",
        evidence={
            "the hanging job was running": running,
            f'shelfwise_jobs_queue_depth{{queue="{DRILL_QUEUE}"}}': depth,
            f'shelfwise_jobs_oldest_ready_age_seconds{{queue="{DRILL_QUEUE}"}}': round(age, 2),
            "shelfwise_jobs_stalled_recovered_total (delta)": moved,
            "the hanging job after recovery": requeued[0],
            "the receipt behind it": receipt[0],
        },
        look_at=[
            "gauges shelfwise_jobs_oldest_ready_age_seconds and shelfwise_jobs_queue_depth "
            "(alert: jobs stuck)",
            "histogram shelfwise_job_duration_seconds (no completions from the task)",
            "GET /v1/admin/debug/tasks on the worker: the job's stack, awaiting its call",
            "counter shelfwise_jobs_stalled_recovered_total, log stalled_job_* lines",
        ],
        fix="a timeout on every remote call inside a job (httpx timeouts, "
        "asyncio.timeout), idempotent tasks so a recovered job can run again",
    )


DRILL = Drill("stuck-job", "a job hangs; its queue ages; stalled-job recovery re-queues it", run)
