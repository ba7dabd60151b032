"""The drills' own job tasks, loaded only through `jobs_extra_modules` by a drill's worker."""

from __future__ import annotations

import asyncio

from procrastinate import JobContext

from shelfwise.jobs.registry import task
from shelfwise.jobs.retry import Backoff

DRILL_QUEUE = "drills"
POISON_POLICY = Backoff(attempts=3, base_seconds=10, cap_seconds=100)
REPAIRED_FEEDS: set[str] = set()  # the "fix deployed" switch of the poison-message drill


@task("drill_import_supplier_feed", queue=DRILL_QUEUE, backoff=POISON_POLICY)
async def import_supplier_feed(context: JobContext, feed: str) -> str:
    """Always fails on a feed it cannot parse: retries cannot help, only a fix can."""
    if feed not in REPAIRED_FEEDS:
        raise ValueError(f"unparseable supplier feed {feed}")
    return "imported"


@task("drill_sync_partner", queue=DRILL_QUEUE, backoff=Backoff(attempts=1))
async def sync_with_partner(context: JobContext, seconds: float) -> str:
    await asyncio.sleep(seconds)  # stands for a partner call made without a timeout
    return "synced"


@task("drill_send_receipt", queue=DRILL_QUEUE, backoff=Backoff(attempts=1))
async def send_receipt(context: JobContext) -> str:
    return "sent"
