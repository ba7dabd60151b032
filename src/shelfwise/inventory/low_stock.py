"""The low-stock report: levels whose available quantity fell under a threshold."""

from __future__ import annotations

from sqlalchemy import Integer, String, cast, func, literal, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.events.doorbell import outbox_written
from shelfwise.events.models import OutboxEvent
from shelfwise.events.outbox import trace_context_value
from shelfwise.events.payloads import EventType
from shelfwise.inventory.models import StockLevel


async def report_low_stock(session: AsyncSession, *, threshold: int) -> int:
    """Emit one `stock.low` per level with `available < threshold`; returns how many.

    One INSERT ... SELECT in one transaction: the report is a consistent snapshot and
    costs the same for ten levels or a hundred thousand.
    """
    available = StockLevel.on_hand - StockLevel.reserved
    payload = func.jsonb_build_object(
        "stock_level_id", StockLevel.id,
        "product_id", StockLevel.product_id,
        "location_id", StockLevel.location_id,
        "on_hand", StockLevel.on_hand,
        "reserved", StockLevel.reserved,
        "available", available,
        "threshold", threshold,
    )  # fmt: skip
    rows = (
        select(
            literal(EventType.STOCK_LOW.value),
            literal("stock_level"),
            cast(StockLevel.id, String),
            payload,
            literal(1, Integer),
            trace_context_value(),
        )
        .where(available < threshold)
        .order_by(StockLevel.id)
    )
    columns = ["type", "aggregate_type", "aggregate_id", "payload", "version", "trace_context"]
    async with session.begin():
        result = await session.execute(insert(OutboxEvent).from_select(columns, rows))
        emitted = int(result.rowcount)  # type: ignore[attr-defined]
        if emitted:
            outbox_written(session)
    return emitted
