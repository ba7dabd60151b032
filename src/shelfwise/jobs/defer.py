"""Deferring a job inside the caller's transaction.

Procrastinate's own `defer_async` uses its connector's pool: a job deferred that way
commits on its own, even if the business transaction then rolls back (a job about an
order that never existed). Calling its SQL function through *our* session instead puts
the job row in the same transaction: both commit, or neither does.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.jobs.registry import spec

DEFER_SQL = text(
    """
    SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[
        ROW(CAST(:queue AS varchar), CAST(:task AS varchar), CAST(:priority AS integer),
            CAST(:lock AS text), CAST(:queueing_lock AS text), CAST(:args AS jsonb),
            CAST(:scheduled_at AS timestamptz))::procrastinate_job_to_defer_v1
    ]))
    """
)


async def defer_in_transaction(
    session: AsyncSession,
    task_name: str,
    args: dict[str, Any],
    *,
    scheduled_at: datetime | None = None,
    priority: int = 0,
) -> int:
    """Queue `task_name(**args)` in the session's open transaction; returns the job id."""
    task = spec(task_name)  # unknown names fail here, not in a worker hours later
    job_id = await session.scalar(
        DEFER_SQL,
        {
            "queue": task.queue,
            "task": task.name,
            "priority": priority,
            "lock": task.name if task.singleton else None,
            "queueing_lock": None,
            "args": json.dumps(args),
            "scheduled_at": scheduled_at,
        },
    )
    assert job_id is not None
    return int(job_id)
