"""Job endpoints: the dead-letter list and replay (admin), and a job's status/progress."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from shelfwise.http.deps import CursorsDep, SessionDep, SettingsDep
from shelfwise.http.pagination import CursorParam, LimitParam, Page, page_request, page_response
from shelfwise.identity.dependencies import Admin, require_role
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal
from shelfwise.jobs import service
from shelfwise.jobs.models import JobStatus
from shelfwise.jobs.schemas import JobOut

admin_router = APIRouter(prefix="/v1/admin/jobs", tags=["jobs"])
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
PRIVATE = "private, no-store"
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # bigint: larger ids are a 422, not a 500

# Job status carries no customer data; staff start imports and follow them here.
JobReader = Annotated[Principal, Depends(require_role(Role.ADMIN, Role.STAFF))]


@admin_router.get("")
async def list_jobs(
    admin: Admin,
    request: Request,
    response: Response,
    session: SessionDep,
    cursors: CursorsDep,
    settings: SettingsDep,
    limit: LimitParam = None,
    cursor: CursorParam = None,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    queue: Annotated[str | None, Query(max_length=128)] = None,
    task: Annotated[str | None, Query(max_length=128)] = None,
) -> Page[JobOut]:
    """Jobs, newest first. `?status=failed` is the dead-letter list."""
    scope = f"jobs:{status_filter or ''}:{queue or ''}:{task or ''}"
    page = page_request(
        cursors,
        scope,
        limit,
        cursor,
        default=settings.page_limit_default,
        cap=settings.page_limit_max,
    )
    result = await service.list_jobs(
        session, page=page, status=status_filter, queue=queue, task=task
    )
    items, next_cursor = page_response(request, response, cursors, scope, result)
    response.headers["Cache-Control"] = PRIVATE
    return Page(
        data=[JobOut.of(job) for job in items], next_cursor=next_cursor, has_more=result.has_more
    )


@admin_router.post("/{job_id}/retry", status_code=status.HTTP_202_ACCEPTED, responses={409: {}})
async def retry_job(job_id: JobId, admin: Admin, session: SessionDep, response: Response) -> JobOut:
    """Replay a dead letter (a job in status `failed`)."""
    job = await service.retry_failed_job(session, job_id, actor=str(admin.id))
    response.headers["Cache-Control"] = PRIVATE
    return JobOut.of(job)


@router.get("/{job_id}")
async def get_job(
    job_id: JobId, reader: JobReader, session: SessionDep, response: Response
) -> JobOut:
    """A job's status and progress (`progress` is null until the job reports any)."""
    job = await service.get_job(session, job_id)
    response.headers["Cache-Control"] = PRIVATE
    return JobOut.of(job)
