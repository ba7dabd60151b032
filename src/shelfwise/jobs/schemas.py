"""Job resources as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shelfwise.jobs.service import JobView


class Progress(BaseModel):
    done: int
    total: int | None
    message: str
    updated_at: datetime | None


class JobOut(BaseModel):
    id: int
    queue: str
    task: str
    status: str
    attempts: int
    args: dict[str, Any]
    scheduled_at: datetime | None
    progress: Progress | None
    last_error: str | None

    @classmethod
    def of(cls, job: JobView) -> JobOut:
        progress = (
            Progress(
                done=job.done,
                total=job.total,
                message=job.message or "",
                updated_at=job.progress_updated_at,
            )
            if job.done is not None
            else None
        )
        return cls(
            id=job.id,
            queue=job.queue,
            task=job.task,
            status=job.status,
            attempts=job.attempts,
            args=job.args,
            scheduled_at=job.scheduled_at,
            progress=progress,
            last_error=job.last_error,
        )
