"""Deferring a job inside the caller's transaction.

Procrastinate's own `defer_async` uses its connector's pool: a job deferred that way
commits on its own, even if the business transaction then rolls back (a job about an
order that never existed). Calling its SQL function through *our* session instead puts
the job row in the same transaction: both commit, or neither does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.jobs.registry import spec
from shelfwise.observability.tracing import TRACE_KEY, inject_context

DEFER_SQL = text(
    """
    SELECT unnest(procrastinate_defer_jobs_v1(ARRAY(
        SELECT ROW(CAST(:queue AS varchar), CAST(:task AS varchar), CAST(:priority AS integer),
                   CAST(:lock AS text), CAST(NULL AS text), a.args,
                   CAST(:scheduled_at AS timestamptz))::procrastinate_job_to_defer_v1
        FROM jsonb_array_elements(CAST(:args AS jsonb)) WITH ORDINALITY AS a(args, n)
        ORDER BY a.n
    )))
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
    (job_id,) = await defer_many_in_transaction(
        session, task_name, [args], scheduled_at=scheduled_at, priority=priority
    )
    return job_id


async def defer_many_in_transaction(
    session: AsyncSession,
    task_name: str,
    args_list: Sequence[dict[str, Any]],
    *,
    scheduled_at: datetime | None = None,
    priority: int = 0,
) -> list[int]:
    """Queue one job per `args` in one statement (Procrastinate's SQL takes an array);
    returns the job ids in the same order.

    With tracing on, each job's args carry the current trace context under `TRACE_KEY`
    unless `args` already name one (an event's own, for a webhook delivery)."""
    if not args_list:
        return []
    task = spec(task_name)  # unknown names fail here, not in a worker hours later
    carrier = inject_context()
    if carrier is not None:  # tracing on: the job's span will link to this one
        args_list = [{TRACE_KEY: carrier, **args} for args in args_list]
    ids = await session.scalars(
        DEFER_SQL,
        {
            "queue": task.queue,
            "task": task.name,
            "priority": priority,
            "lock": task.name if task.singleton else None,
            "args": json.dumps(list(args_list)),
            "scheduled_at": scheduled_at,
        },
    )
    return [int(job_id) for job_id in ids]
