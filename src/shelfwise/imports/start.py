"""Starting an import: the use case behind `POST /v1/imports` once the file is on disk."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfwise.imports.service import IMPORT_TASK
from shelfwise.jobs.defer import defer_in_transaction
from shelfwise.jobs.service import JobView, get_job


async def start_import(
    sessions: async_sessionmaker[AsyncSession],
    path: Path,
    *,
    stock_allowed: bool,
    actor_id: uuid.UUID | None,
) -> JobView:
    """Defer the import job for the stored file `path` and return the job. If the job
    cannot be deferred, the file is deleted: nothing is left behind without its job."""
    try:
        async with sessions() as session, session.begin():
            job_id = await defer_in_transaction(
                session,
                IMPORT_TASK,
                {
                    "file": path.name,
                    "stock_allowed": stock_allowed,
                    "actor_id": str(actor_id) if actor_id else None,
                },
            )
    except BaseException:
        await anyio.Path(path).unlink(missing_ok=True)
        raise
    async with sessions() as session:
        return await get_job(session, job_id)
