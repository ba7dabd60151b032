"""The low-stock report: levels whose available quantity fell under a threshold."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.events.payloads import stock_low_event
from shelfwise.inventory import store
from shelfwise.store.unit import unit_of_work


async def report_low_stock(session: AsyncSession, *, threshold: int) -> int:
    """Emit one `stock.low` per level with `available < threshold`; returns how many.

    One transaction, two statements however many levels: a read of one snapshot
    (`LEVELS_BELOW`), then the unit of work's single events INSERT. The payload is built
    by `events/payloads.py::stock_low_event`, the only place it is (no SQL twin); the
    unit wakes the relay after the commit.
    """
    async with unit_of_work(session) as unit:
        levels = await store.levels_below(unit, threshold)
        unit.emit(
            *(
                stock_low_event(
                    stock_level_id=level.id,
                    product_id=level.product_id,
                    location_id=level.location_id,
                    on_hand=level.on_hand,
                    reserved=level.reserved,
                    threshold=threshold,
                )
                for level in levels
            )
        )
    return len(levels)
