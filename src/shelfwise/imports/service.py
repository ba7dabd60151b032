"""The import job: load the file into staging tables, judge it, merge it in batches.

1. `staging.load`: the file streams into an UNLOGGED staging table with `COPY` (the
   `csv` module re-writes it in a thread, chunk by chunk, with line numbers);
2. `staging.judge`: every row is checked set-based (SQL for canonical cells, the row
   rules in `parser.check_row` for the rest), duplicates and unknown locations marked;
3. `merge_batch`, `batch_size` records at a time, one transaction each: stock checks
   under the level locks (`stock.check`), the products' upsert (`catalog/store.py`),
   the stock writes (`stock.write` through `inventory/store.py`), the events, and the
   `import.progress` event. Rows refused by the stock checks are left out whole; the
   others commit together. Two batches are in flight on two connections and commit in
   file order (`run_import`, docs/decisions/0042). A batch holds its levels' row locks
   for its own transaction only (plus at most `TURN_WAIT_S` waiting for the batch
   before it), so orders on the same levels wait about one batch (docs/imports.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog
from psycopg import sql as pgsql
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.catalog.store import upsert_staged_products
from shelfwise.events.outbox import Event
from shelfwise.imports import stock
from shelfwise.imports.parser import MAX_ERRORS_KEPT, CsvToCopy
from shelfwise.imports.staging import (
    BATCH_COUNTS,
    BATCH_ERRORS,
    Staging,
    batches_sharing_skus,
    drop,
    judge,
    load,
)
from shelfwise.jobs.service import report_progress
from shelfwise.observability.tracing import inject_context
from shelfwise.store.unit import unit_of_work
from shelfwise.transactions import retrying

IMPORT_PROGRESS = "import.progress"
# A batch looks up at most `batch_size` rows of `products` and `stock_levels` by key, and
# reads its staging rows by record number: it never wants a whole live table. The planner
# disagreed at ~100 000 products (a hash join over a seq scan of `products` or
# `stock_levels` per batch, 40 ms where the batch's probes take 2), so the batch's
# transaction takes scans off the table; hash joins between its own rows stay.
NO_TABLE_SCANS: Final = "SET LOCAL enable_seqscan = off"
IMPORT_TASK = "import_products"
log = structlog.get_logger("shelfwise.imports")


class PreviousBatchFailed(Exception):
    """The batch before this one failed: this one rolls back instead of committing."""


class TurnTooLong(Exception):
    """The batch before this one has not committed within `TURN_WAIT_S`: this one rolls
    back (releasing its locks) and runs again once it has."""


# How long a batch holding its locks waits for the previous batch's commit. The previous
# batch may be waiting for a writer (an order) that waits for a level this batch holds:
# PostgreSQL cannot see that cycle (the second wait is here, not on a lock), so it is
# broken here, after about PostgreSQL's own `deadlock_timeout`.
TURN_WAIT_S: Final = 1.0


@dataclass
class Summary:
    lines: int = 0
    imported: int = 0
    created: int = 0
    updated: int = 0  # existing products whose columns changed
    stock_changed: int = 0  # levels whose on_hand the import moved
    bad: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: BatchResult) -> None:
        self.lines = result.lines
        self.imported += result.imported
        self.created += result.created
        self.updated += result.updated
        self.stock_changed += result.stock_changed
        self.bad += result.bad
        self.errors.extend(result.errors[: max(MAX_ERRORS_KEPT - len(self.errors), 0)])

    def as_message(self) -> str:
        return json.dumps(
            {
                "lines": self.lines,
                "imported": self.imported,
                "created": self.created,
                "updated": self.updated,
                "stock_changed": self.stock_changed,
                "bad": self.bad,
                "errors": self.errors,
            }
        )


@dataclass
class BatchResult:
    lines: int  # data lines read up to this batch's end
    imported: int = 0
    created: int = 0
    updated: int = 0
    stock_changed: int = 0
    bad: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # in line order


@dataclass(frozen=True)
class BatchOf:
    """Where a batch sits in the import: records `lo`..`hi` of the staging rows."""

    job_id: int
    rows: pgsql.Identifier
    lo: int
    hi: int
    lines: int
    done: bool
    has_stock: bool


async def merge_batch(
    session: AsyncSession,
    batch: BatchOf,
    summary: Summary,
    *,
    reference: str,
    actor_id: uuid.UUID | None,
    trace_context: dict[str, str] | None,
    turn: Callable[[], Awaitable[None]] | None = None,
) -> BatchResult:
    """One transaction: stock checks, product upsert, stock writes, their events, and the
    `import.progress` event saying where the import stands once it commits. `turn`, if
    given, is awaited after the writes and before the counts: it returns once the
    previous batch has committed and been added to `summary` (two batches in flight,
    committed in order: `run_import`)."""
    rows, lo, hi = batch.rows, batch.lo, batch.hi
    result = BatchResult(batch.lines)
    async with unit_of_work(session) as unit:
        conn = unit.conn
        await conn.execute(NO_TABLE_SCANS)
        if batch.has_stock:
            await stock.check(conn, rows, lo, hi)
        result.created, result.updated = await upsert_staged_products(
            conn, rows, lo, hi, trace_context=trace_context
        )
        if batch.has_stock:
            result.stock_changed, _late = await stock.write(
                conn,
                rows,
                lo,
                hi,
                reference=reference,
                actor_id=actor_id,
                trace_context=trace_context,
            )
        if turn is not None:
            await turn()
        span = {"lo": lo, "hi": hi}
        counted = await conn.execute(pgsql.SQL(BATCH_COUNTS).format(rows=rows), span)
        [(imported, bad)] = await counted.fetchall()
        result.imported, result.bad = int(imported), int(bad)
        if bad and (room := MAX_ERRORS_KEPT - len(summary.errors)) > 0:
            found = await conn.execute(
                pgsql.SQL(BATCH_ERRORS).format(rows=rows), {**span, "room": room}
            )
            result.errors = [
                {"line": line, "error": error} for line, error in await found.fetchall()
            ]
        progress = {
            "job_id": batch.job_id or None,  # None: `shelfwise import`
            "lines": batch.lines,
            "imported": summary.imported + result.imported,
            "bad": summary.bad + result.bad,
            "done": batch.done,
        }
        # Written with the batch's other events; the unit wakes the relay after COMMIT
        # (the set-based stock and product events above share that wake-up).
        unit.emit(Event(IMPORT_PROGRESS, "job", str(batch.job_id or "cli"), progress))
    return result


async def run_import(
    session_factory: Callable[[], AsyncSession],
    path: Path,
    *,
    job_id: int,
    batch_size: int = 1000,
    stock_allowed: bool = True,
    actor_id: uuid.UUID | None = None,
    on_batch: Callable[[Summary], None] | None = None,
) -> Summary:
    """Load `path` into staging tables, judge every row, then merge `batch_size` records
    per transaction. Good rows are kept even when others are bad; a file that is not
    UTF-8, lacks required columns or has stock columns without `stock_allowed` stops the
    import before anything is merged (raises)."""
    reader = CsvToCopy(path, stock_allowed=stock_allowed)
    staging = Staging.new()
    summary = Summary()
    reference = f"import:{job_id}" if job_id else "import:cli"
    trace_context = inject_context()  # the import job's trace, for its events' spans
    try:
        started = time.perf_counter()
        async with session_factory() as session:
            loaded = await load(session, staging, reader)
        loaded_at = time.perf_counter()
        async with session_factory() as session:
            await judge(session, staging)
        log.info(  # where an import's time goes: load and judge, then the batches
            "import_staged",
            job_id=job_id,
            records=loaded.records,
            load_s=round(loaded_at - started, 2),
            judge_s=round(time.perf_counter() - loaded_at, 2),
        )
        has_stock = "location" in reader.columns
        last = loaded.records // batch_size
        async with session_factory() as session:
            shared = await batches_sharing_skus(session, staging, batch_size)

        async def merge(batch: BatchOf, previous: asyncio.Task[None] | None) -> None:
            async def turn() -> None:
                if previous is not None:
                    try:
                        await asyncio.wait_for(asyncio.shield(previous), TURN_WAIT_S)
                    except TimeoutError:
                        raise TurnTooLong from None
                    except BaseException as exc:
                        raise PreviousBatchFailed from exc

            async def once() -> BatchResult:
                async with session_factory() as session:
                    return await merge_batch(
                        session,
                        batch,
                        summary,
                        reference=reference,
                        actor_id=actor_id,
                        trace_context=trace_context,
                        turn=turn,
                    )

            # A batch is all or nothing (its refusals in the staging rows included), so a
            # deadlock or serialization failure is retried from its start: possible only
            # when another writer creates a product of the batch between its check and
            # its upsert, and locks that product's level first.
            try:
                result = await retrying(once, use_case="import_batch", attempts=3)
            except TurnTooLong:  # rolled back; again once the previous batch is done
                log.info("import_batch_waited", job_id=job_id, lo=batch.lo)
                if previous is not None:
                    with contextlib.suppress(BaseException):  # its error is raised by the loop
                        await previous
                result = await retrying(once, use_case="import_batch", attempts=3)
            summary.add(result)
            if job_id:
                async with session_factory() as session:
                    await report_progress(
                        session,
                        job_id,
                        done=summary.lines,
                        total=summary.lines if batch.done else None,
                        message=summary.as_message(),
                    )
            if on_batch is not None:
                on_batch(summary)

        # Two batches in flight on two connections (PostgreSQL does most of the work, and
        # has two cores here), committed in file order: batch k writes while batch k-1
        # finishes, then waits for k-1's commit before counting and committing itself,
        # so progress events, the summary and the error report keep their order. They
        # overlap only when they share no SKU (no row lock in common: neither can wait
        # for the other inside PostgreSQL while the other waits for it here); a batch
        # holding a SKU of an earlier batch starts once the one before it committed.
        previous: asyncio.Task[None] | None = None
        for k in range(last + 1):
            lo, hi = k * batch_size + 1, (k + 1) * batch_size
            batch = BatchOf(
                job_id, staging.rows, lo, hi, min(hi, loaded.records), k == last, has_stock
            )
            if previous is not None and k in shared:
                await previous
            current = asyncio.create_task(merge(batch, previous))
            if previous is not None:
                try:
                    await previous
                except BaseException:
                    with contextlib.suppress(BaseException):
                        await current  # fails at its turn, rolling back
                    raise
            previous = current
        if previous is not None:
            await previous
        return summary
    finally:
        reader.close()
        try:
            async with session_factory() as session:
                await drop(session, staging)
        except Exception as exc:  # never hide the import's own error behind this one
            log.warning("import_staging_not_dropped", table=staging.key, error=str(exc))
