"""Upserting validated rows in batches, and the import job itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import literal_column
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.catalog.models import Product
from shelfwise.events.outbox import Event, emit, emit_all
from shelfwise.events.payloads import EventType
from shelfwise.imports.parser import MAX_ERRORS_KEPT, BadRow, CsvBatches
from shelfwise.jobs.service import report_progress

IMPORT_PROGRESS = "import.progress"
IMPORT_TASK = "import_products"


@dataclass
class Summary:
    lines: int = 0
    imported: int = 0
    created: int = 0
    bad: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add_bad(self, rows: list[BadRow]) -> None:
        self.bad += len(rows)
        room = MAX_ERRORS_KEPT - len(self.errors)
        self.errors.extend({"line": r.line, "error": r.error} for r in rows[: max(room, 0)])

    def as_message(self) -> str:
        return json.dumps(
            {
                "lines": self.lines,
                "imported": self.imported,
                "created": self.created,
                "bad": self.bad,
                "errors": self.errors,
            }
        )


async def upsert_products(
    session: AsyncSession, rows: list[dict[str, Any]], progress: dict[str, Any] | None
) -> int:
    """One transaction: insert or update by SKU, `product.created`/`product.updated` events
    (the catalog cache listens to them) and, if given, an `import.progress` event."""
    created = 0
    async with session.begin():
        if rows:
            stmt = insert(Product).values(rows)
            upsert = stmt.on_conflict_do_update(
                index_elements=[Product.sku],
                set_={
                    "name": stmt.excluded.name,
                    "description": stmt.excluded.description,
                    "category": stmt.excluded.category,
                    "price_minor": stmt.excluded.price_minor,
                    "currency": stmt.excluded.currency,
                    "version": Product.version + 1,
                    "updated_at": literal_column("now()"),
                },
            ).returning(
                Product.id,
                Product.sku,
                Product.name,
                Product.description,
                Product.category,
                Product.price_minor,
                Product.currency,
                Product.version,
                literal_column("(xmax = 0)").label("inserted"),
            )
            events = []
            for row in (await session.execute(upsert)).all():
                payload = {
                    "product_id": str(row.id),
                    "sku": row.sku,
                    "name": row.name,
                    "description": row.description,
                    "category": row.category,
                    "price_minor": row.price_minor,
                    "currency": row.currency,
                    "version": row.version,
                }
                kind = EventType.PRODUCT_CREATED if row.inserted else EventType.PRODUCT_UPDATED
                created += 1 if row.inserted else 0
                events.append(Event(kind.value, "product", str(row.id), payload))
            await emit_all(session, events)
        if progress is not None:
            await emit(
                session,
                type=IMPORT_PROGRESS,
                aggregate=("job", progress["job_id"] or "cli"),
                payload=progress,
            )
    return created


async def run_import(
    session_factory: Callable[[], AsyncSession],
    path: Path,
    *,
    job_id: int,
    batch_size: int = 1000,
    on_batch: Callable[[Summary], None] | None = None,
) -> Summary:
    """Parse `path` in a thread, batch by batch, and upsert each batch. Good rows are kept
    even when others are bad; a file that is not UTF-8 stops the import (raises)."""
    reader = CsvBatches(path, batch_size)
    summary = Summary()
    try:
        while True:
            batch = await asyncio.to_thread(reader.next_batch)
            summary.lines = batch.lines
            summary.add_bad(batch.bad)
            progress = {
                "job_id": job_id or None,  # None: `shelfwise import`
                "lines": batch.lines,
                "imported": summary.imported + len(batch.rows),
                "bad": summary.bad,
                "done": batch.done,
            }
            async with session_factory() as session:
                summary.created += await upsert_products(session, batch.rows, progress)
            summary.imported += len(batch.rows)
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
