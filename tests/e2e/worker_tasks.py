"""A task for the worker-process tests, loaded by `shelfwise worker` through the
`SHELFWISE_JOBS_EXTRA_MODULES` setting. It blocks on an advisory lock the test holds:
"told via the database" when to finish, with no sleeps anywhere."""

from __future__ import annotations

from procrastinate import JobContext
from sqlalchemy import func, select

from shelfwise.jobs.registry import task
from shelfwise.jobs.retry import Backoff
from shelfwise.jobs.runtime import runtime_of
from shelfwise.jobs.service import report_progress


@task("test_block_on_lock", queue="test", backoff=Backoff(attempts=3, base_seconds=0.1))
async def block_on_lock(context: JobContext, key: int) -> str:
    rt = runtime_of(context)
    job_id = int(context.job.id or 0)
    worker = context.worker_name or "?"
    async with rt.db.sessions() as session:
        await report_progress(session, job_id, done=0, total=1, message=f"started by {worker}")
    async with rt.db.sessions() as session, session.begin():
        await session.execute(select(func.pg_advisory_xact_lock(key)))
    async with rt.db.sessions() as session:
        await report_progress(session, job_id, done=1, total=1, message=f"finished by {worker}")
    return worker
