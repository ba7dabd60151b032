"""Upserting validated rows in batches, and the import job itself.

Each batch is one transaction: stock checks (`stock.check`), the product upsert, the
stock writes (`stock.write`), the events. Rows refused by the stock checks are left out
whole; the others commit together.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.events.doorbell import outbox_written
from shelfwise.events.outbox import emit
from shelfwise.events.payloads import EventType
from shelfwise.imports import stock
from shelfwise.imports.parser import MAX_ERRORS_KEPT, BadRow, Batch, CsvBatches, ImportRow
from shelfwise.jobs.service import report_progress
from shelfwise.observability.tracing import inject_context

IMPORT_PROGRESS = "import.progress"
IMPORT_TASK = "import_products"


@dataclass
class Summary:
    lines: int = 0
    imported: int = 0
    created: int = 0
    updated: int = 0  # existing products whose columns changed
    stock_changed: int = 0  # levels whose on_hand the import moved
    bad: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_bad(self, rows: list[BadRow]) -> None:
        self.bad += len(rows)
        room = MAX_ERRORS_KEPT - len(self.errors)
        self.errors.extend({"line": r.line, "error": r.error} for r in rows[: max(room, 0)])

    def add(self, result: BatchResult) -> None:
        self.imported += result.imported
        self.created += result.created
        self.updated += result.updated
        self.stock_changed += result.stock_changed
        self.add_bad(result.bad)

    def progress(self, job_id: int, batch: Batch, result: BatchResult) -> dict[str, Any]:
        """The `import.progress` payload once `batch` (imported as `result`) commits."""
        return {
            "job_id": job_id or None,  # None: `shelfwise import`
            "lines": batch.lines,
            "imported": self.imported + result.imported,
            "bad": self.bad + len(batch.bad) + len(result.bad),
            "done": batch.done,
        }

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
    imported: int = 0
    created: int = 0
    updated: int = 0
    stock_changed: int = 0
    bad: list[BadRow] = field(default_factory=list)


ProgressOf = Callable[[BatchResult], dict[str, Any]]


async def import_batch(
    session: AsyncSession,
    rows: list[ImportRow],
    *,
    reference: str,
    actor_id: uuid.UUID | None = None,
    progress_of: ProgressOf | None = None,
) -> BatchResult:
    """One transaction: stock checks, product upsert, stock writes, events and, if asked,
    an `import.progress` event built from the outcome."""
    async with session.begin():
        checked = await stock.check(session, rows)
        result = BatchResult(bad=checked.bad)
        products = {r.product["sku"]: r.product for r in checked.rows}  # one per SKU
        result.created, result.updated = await upsert_products(session, list(products.values()))
        result.stock_changed, late = await stock.write(
            session, checked, reference=reference, actor_id=actor_id
        )
        result.bad = sorted([*result.bad, *late], key=lambda b: b.line)
        result.imported = len(checked.rows) - len(late)
        if progress_of is not None:
            progress = progress_of(result)
            await emit(
                session,
                type=IMPORT_PROGRESS,
                aggregate=("job", progress["job_id"] or "cli"),
                payload=progress,
            )
    return result


PRODUCT_FIELDS = ("name", "description", "category", "price_minor", "currency")

# One statement, one round trip, the same text for every batch (parameters are arrays:
# a 1,000-row multi-VALUES INSERT cost more to compile than to run). A product whose
# columns already match is left alone: no new version, no event, so re-importing a file
# changes nothing. The payload keys are those of `events.payloads.product_payload`.
UPSERT_PRODUCTS_SQL = text(
    """
    WITH upserted AS (
        INSERT INTO products AS p (sku, name, description, category, price_minor, currency)
        SELECT * FROM unnest(
            CAST(:sku AS text[]), CAST(:name AS text[]), CAST(:description AS text[]),
            CAST(:category AS text[]), CAST(:price_minor AS integer[]),
            CAST(:currency AS text[]))
        ON CONFLICT (sku) DO UPDATE SET
            name = excluded.name, description = excluded.description,
            category = excluded.category, price_minor = excluded.price_minor,
            currency = excluded.currency, version = p.version + 1, updated_at = clock_timestamp()
        WHERE (p.name, p.description, p.category, p.price_minor, p.currency)
            IS DISTINCT FROM (excluded.name, excluded.description, excluded.category,
                              excluded.price_minor, excluded.currency)
        RETURNING p.id, p.sku, p.name, p.description, p.category, p.price_minor,
                  p.currency, p.version, (p.xmax = 0) AS inserted
    ), events AS (
        INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, trace_context)
        SELECT CASE WHEN inserted THEN :created_type ELSE :updated_type END,
               'product', id::text,
               jsonb_build_object(
                   'product_id', id, 'sku', sku, 'name', name, 'description', description,
                   'category', category, 'price_minor', price_minor, 'currency', currency,
                   'version', version),
               CAST(:trace_context AS jsonb)
        FROM upserted ORDER BY sku
        RETURNING id
    ), counted AS (
        SELECT (SELECT count(*) FROM upserted WHERE inserted) AS created,
               (SELECT count(*) FROM events) AS emitted
    )
    SELECT created, emitted FROM counted
    """
)


async def upsert_products(session: AsyncSession, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Insert or update by SKU in the caller's transaction, with `product.created` /
    `product.updated` events (the catalog cache listens to them); returns how many
    products were created and updated."""
    if not rows:
        return 0, 0
    params: dict[str, Any] = {f: [r[f] for r in rows] for f in ("sku", *PRODUCT_FIELDS)}
    params |= {
        "created_type": EventType.PRODUCT_CREATED.value,
        "updated_type": EventType.PRODUCT_UPDATED.value,
        # The import job's trace, for the spans that carry these events (NULL when off).
        "trace_context": json.dumps(carrier) if (carrier := inject_context()) else None,
    }
    created, emitted = (await session.execute(UPSERT_PRODUCTS_SQL, params)).one()
    if emitted:
        outbox_written(session)  # the relay is woken after the commit (events/doorbell.py)
    return int(created), int(emitted) - int(created)


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
    """Parse `path` in a thread, batch by batch, and import each batch. Good rows are kept
    even when others are bad; a file that is not UTF-8, lacks required columns or has
    stock columns without `stock_allowed` stops the import (raises)."""
    reader = CsvBatches(path, batch_size, stock_allowed=stock_allowed)
    summary = Summary()
    reference = f"import:{job_id}" if job_id else "import:cli"
    try:
        while True:
            batch = await asyncio.to_thread(reader.next_batch)
            summary.lines = batch.lines
            async with session_factory() as session:
                result = await import_batch(
                    session,
                    batch.rows,
                    reference=reference,
                    actor_id=actor_id,
                    progress_of=partial(summary.progress, job_id, batch),
                )
            result.bad = sorted([*batch.bad, *result.bad], key=lambda b: b.line)
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
            if batch.done:
                return summary
    finally:
        reader.close()
