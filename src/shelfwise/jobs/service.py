"""Reading, replaying and reporting on jobs (the admin API and long-running tasks)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import Select, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import Conflict, InvalidCursor, NotFound
from shelfwise.jobs.models import JobProgress, JobStatus, procrastinate_jobs
from shelfwise.pagination import PageRequest, PageResult, page_from_rows

log = structlog.get_logger("shelfwise.jobs")
jobs = procrastinate_jobs.c


class JobNotFound(NotFound):
    code = "job_not_found"
    title = "Job not found"


class JobNotRetryable(Conflict):
    code = "job_not_retryable"
    title = "Only failed jobs can be replayed"


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    queue: str
    task: str
    status: str
    attempts: int
    args: dict[str, Any]
    scheduled_at: datetime | None
    done: int | None
    total: int | None
    message: str | None
    last_error: str | None
    progress_updated_at: datetime | None


def _jobs_query() -> Select[Any]:
    return select(
        jobs.id,
        jobs.queue_name,
        jobs.task_name,
        jobs.status,
        jobs.attempts,
        jobs.args,
        jobs.scheduled_at,
        JobProgress.done,
        JobProgress.total,
        JobProgress.message,
        JobProgress.last_error,
        JobProgress.updated_at,
    ).outerjoin(JobProgress, JobProgress.job_id == jobs.id)


async def list_jobs(
    session: AsyncSession,
    *,
    page: PageRequest,
    status: JobStatus | None = None,
    queue: str | None = None,
    task: str | None = None,
) -> PageResult[JobView]:
    """Newest first, keyset on the job id."""
    stmt = _jobs_query().order_by(jobs.id.desc()).limit(page.limit + 1)
    if status is not None:
        stmt = stmt.where(jobs.status == status.value)
    if queue is not None:
        stmt = stmt.where(jobs.queue_name == queue)
    if task is not None:
        stmt = stmt.where(jobs.task_name == task)
    if page.after is not None:
        try:
            stmt = stmt.where(jobs.id < int(page.after[0]))
        except (ValueError, IndexError) as exc:
            raise InvalidCursor("The cursor does not fit this list") from exc
    async with session.begin():
        rows = (await session.execute(stmt)).all()
    return page_from_rows([JobView(*row) for row in rows], page.limit, lambda j: (str(j.id),))


async def get_job(session: AsyncSession, job_id: int) -> JobView:
    async with session.begin():
        row = (await session.execute(_jobs_query().where(jobs.id == job_id))).first()
    if row is None:
        raise JobNotFound(f"No job with id {job_id}")
    return JobView(*row)


async def retry_failed_job(session: AsyncSession, job_id: int, *, actor: str) -> JobView:
    """Replay a dead letter: back to 'todo', due now. It gets one more attempt; failing
    again puts it straight back in the dead-letter list."""
    async with session.begin():
        status = await session.scalar(
            select(jobs.status).where(jobs.id == job_id).with_for_update()
        )
        if status is None:
            raise JobNotFound(f"No job with id {job_id}")
        if status != JobStatus.FAILED:
            raise JobNotRetryable(f"Job {job_id} is {status}, not failed")
        await session.execute(
            text("SELECT procrastinate_retry_job_v2(:id, now(), NULL, NULL, NULL)"), {"id": job_id}
        )
    log.warning("job_replayed", job_id=job_id, actor=actor)
    return await get_job(session, job_id)


async def report_progress(
    session: AsyncSession, job_id: int, *, done: int, total: int | None = None, message: str = ""
) -> None:
    """For long tasks (CSV import): commit progress in a short transaction of its own, so
    readers of `GET /v1/jobs/{id}` see it while the job is still running."""
    values = {"done": done, "total": total, "message": message}
    stmt = insert(JobProgress).values(job_id=job_id, **values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[JobProgress.job_id],
        set_={**values, "updated_at": func.clock_timestamp()},
    )
    async with session.begin():
        await session.execute(stmt)
