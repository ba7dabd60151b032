"""Events into the outbox, and the relay run just long enough to publish them."""

from __future__ import annotations

import asyncio
import time
import uuid

from shelfwise.drills.system import DrillSystem
from shelfwise.events.outbox import Event
from shelfwise.events.relay import Relay, RelayConfig
from shelfwise.events.types import EventType
from shelfwise.store.unit import unit_of_work


async def emit_product_updates(system: DrillSystem, count: int) -> list[str]:
    """`count` product.updated events, one committed transaction each (as requests do)."""
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for product_id in ids:
        async with system.ctx.db.sessions() as session, unit_of_work(session) as unit:
            unit.emit(
                Event(
                    EventType.PRODUCT_UPDATED.value,
                    "product",
                    product_id,
                    {"id": product_id, "drill": True},
                )
            )
    return ids


async def unpublished(system: DrillSystem) -> int:
    async with await system.connect() as conn:
        row = await (
            await conn.execute("SELECT count(*) FROM outbox_events WHERE position IS NULL")
        ).fetchone()
    return int(row[0]) if row else 0


async def publish_all(system: DrillSystem, *, within: float = 10.0) -> None:
    """Run a relay until nothing is left unpublished, then stop it."""
    stop = asyncio.Event()
    relay = Relay(system.database_url, RelayConfig(poll_interval=0.05), name="drill-relay")
    running = asyncio.create_task(relay.run(stop))
    try:
        deadline = time.monotonic() + within
        # Polls the database (the relay is another connection): no in-process event.
        while await unpublished(system) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await running
