"""What `/readyz` says about the event bus: read from the publisher's row, not the broker.

The API does not need the broker to serve (events wait in the outbox), so this is a
report, never a reason to take an instance out of the load balancer. It reads what the
active publisher recorded (`connected`, `last_error`, `status_at`) and how far behind
the stream its confirmed position is.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

STATUS_SQL = text(
    "SELECT p.connected, p.last_error, p.status_at, p.position,"
    " (SELECT coalesce(max(position), 0) FROM outbox_events) - p.position"
    " FROM broker_publisher_positions AS p WHERE p.exchange = :exchange"
)


async def broker_status(engine: AsyncEngine, exchange: str) -> str:
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(STATUS_SQL, {"exchange": exchange})).first()
    except Exception as exc:  # readiness reports, it does not raise (schema behind?)
        return f"unknown: {type(exc).__name__}"
    if row is None:
        return "degraded: no publisher has connected yet (is a worker running?)"
    connected, error, since, position, behind = row
    if connected:
        return "ok" if behind < 10_000 else f"degraded: {behind} events behind position {position}"
    return f"degraded: publisher disconnected since {since.isoformat()}: {error}; {behind} waiting"
