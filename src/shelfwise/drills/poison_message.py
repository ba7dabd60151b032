"""poison-message: a job that fails every time is retried with backoff, then dead-lettered."""

from __future__ import annotations

from structlog.testing import capture_logs

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.job_support import defer, drain, job_app, job_status, refresh_gauges
from shelfwise.drills.job_tasks import DRILL_QUEUE, REPAIRED_FEEDS
from shelfwise.drills.system import DrillSystem
from shelfwise.jobs.service import retry_failed_job

TASK = "drill_import_supplier_feed"


async def run(system: DrillSystem, quick: bool) -> Outcome:
    feed = f"feed-{id(system)}"
    failed = metric("shelfwise_jobs_failed_total", task=TASK)
    retries = metric("shelfwise_job_retries_total", task=TASK)
    async with job_app(system) as (app, runtime):
        job_id = await defer(system, TASK, feed=feed)
        with capture_logs() as logs:
            await drain(app, runtime, "drill-poison", [DRILL_QUEUE])
        dead_status = await job_status(system, job_id)
        await refresh_gauges(system)
        dead_letters = metric("shelfwise_jobs_dead_letters", queue=DRILL_QUEUE)
        REPAIRED_FEEDS.add(feed)  # the fix is deployed: replay the dead letter
        try:
            async with system.ctx.db.sessions() as session:
                await retry_failed_job(session, job_id, actor="drill")
            await drain(app, runtime, "drill-replay", [DRILL_QUEUE])
        finally:
            REPAIRED_FEEDS.discard(feed)
        replayed_status = await job_status(system, job_id)
    dead_logged = [e for e in logs if e.get("log_level") == "error"]
    failed_delta = metric("shelfwise_jobs_failed_total", task=TASK) - failed
    return Outcome(
        signal="shelfwise_jobs_dead_letters",
        seen=dead_status == ("failed", 3)
        and dead_letters >= 1
        and failed_delta == 1
        and replayed_status[0] == "succeeded",
        evidence={
            "status, attempts after the worker gave up": dead_status,
            "shelfwise_job_retries_total (delta)": metric("shelfwise_job_retries_total", task=TASK)
            - retries,
            "shelfwise_jobs_failed_total (delta)": failed_delta,
            f'shelfwise_jobs_dead_letters{{queue="{DRILL_QUEUE}"}}': dead_letters,
            "error log": dead_logged[0]["event"] if dead_logged else None,
            "status after the fix and POST /v1/admin/jobs/{id}/retry": replayed_status[0],
        },
        look_at=[
            "counters shelfwise_job_retries_total and shelfwise_jobs_failed_total{task}",
            "gauge shelfwise_jobs_dead_letters{queue} (alert: jobs dead-lettered)",
            "GET /v1/admin/jobs?status=failed: the job's last_error",
            "the job_dead_lettered alert (SHELFWISE_JOBS_ALERT_WEBHOOK_URL)",
        ],
        fix="fix the cause (here: the parser), then replay the dead letter "
        "(POST /v1/admin/jobs/{id}/retry); errors retries cannot cure should fail fast",
    )


DRILL = Drill("poison-message", "a job that always fails is retried, then dead-lettered", run)
