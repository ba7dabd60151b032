"""A consumer span per job run, linked to the trace that deferred the job.

`jobs/defer.py` stores the deferring context in the job's args under `TRACE_KEY`. This
Procrastinate worker middleware takes it out again *before* the task is called (the
task's signature does not know it), whether tracing is on here or not: a job deferred
by a traced API process must still run on an untraced worker.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.util.types import AttributeValue
from procrastinate import JobContext
from procrastinate.middleware import AsyncCallNext
from procrastinate.worker import Worker

from shelfwise.observability.trace_events import (
    MESSAGING_DESTINATION,
    MESSAGING_MESSAGE_ID,
    MESSAGING_OPERATION,
    MESSAGING_SYSTEM,
)
from shelfwise.observability.tracing import TRACE_KEY, enabled, link_from, linked_span

JOB_ATTEMPT = "shelfwise.job.attempt"


async def trace_job(call_next: AsyncCallNext, context: JobContext, worker: Worker) -> Any:
    job = context.job
    carrier = job.task_kwargs.pop(TRACE_KEY, None)
    if not enabled():
        return await call_next()
    link = link_from(carrier if isinstance(carrier, dict) else None)
    attributes: dict[str, AttributeValue] = {
        MESSAGING_SYSTEM: "procrastinate",
        MESSAGING_OPERATION: "process",
        MESSAGING_DESTINATION: job.queue,
        MESSAGING_MESSAGE_ID: str(job.id),
        JOB_ATTEMPT: job.attempts + 1,
    }
    with linked_span(f"{job.task_name} process", [link] if link else [], attributes=attributes):
        return await call_next()
