"""The `import_products` job."""

from __future__ import annotations

import uuid
from pathlib import Path

import anyio
import structlog
from procrastinate import JobContext

from shelfwise.imports.parser import NotUtf8
from shelfwise.imports.service import IMPORT_TASK, run_import
from shelfwise.imports.upload import stored_file
from shelfwise.jobs.registry import task
from shelfwise.jobs.retry import Backoff
from shelfwise.jobs.runtime import runtime_of
from shelfwise.jobs.service import report_progress

log = structlog.get_logger("shelfwise.imports")
# One attempt: a malformed file does not get better by retrying; the job's error says why.
# (Re-running is safe — rows are upserted by SKU — via POST /v1/admin/jobs/{id}/retry.)
ONCE = Backoff(attempts=1)


@task(IMPORT_TASK, queue="imports", backoff=ONCE)
async def import_products(
    context: JobContext,
    file: str | None = None,
    stock_allowed: bool = False,
    actor_id: str | None = None,
    path: str | None = None,
) -> dict[str, int]:
    """`file`: the upload's name under `<data_dir>/imports` (job arguments are shown to
    clients, so they never carry a server path; `path` is what older jobs carried).
    `stock_allowed`: the caller held `stock:write` (jobs queued before stock columns
    existed lack it, and had none). `actor_id`: the user, recorded on ledger rows."""
    rt = runtime_of(context)
    if file is not None:
        path = str(stored_file(rt.settings.data_dir, file))
    if path is None:
        raise ValueError("the job names no file")
    job_id = int(context.job.id or 0)
    try:
        summary = await run_import(
            rt.db.sessions,
            Path(path),
            job_id=job_id,
            stock_allowed=stock_allowed,
            actor_id=uuid.UUID(actor_id) if actor_id else None,
        )
    except (NotUtf8, ValueError) as exc:
        async with rt.db.sessions() as session:
            await report_progress(session, job_id, done=0, message=f"failed: {exc}")
        raise
    log.info(
        "import_finished",
        job_id=job_id,
        imported=summary.imported,
        stock_changed=summary.stock_changed,
        bad=summary.bad,
    )
    await anyio.Path(path).unlink(missing_ok=True)
    return {
        "lines": summary.lines,
        "imported": summary.imported,
        "stock_changed": summary.stock_changed,
        "bad": summary.bad,
    }
