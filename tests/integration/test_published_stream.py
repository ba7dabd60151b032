"""The published stream read on the psycopg driver (`events/published.py`): positions in
order after a cursor, JSONB and timestamps as Python values, and the live hub's catch-up
and resume from the database on the driver alone."""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb

from shelfwise.context import AppContext
from shelfwise.events.published import newest_position, oldest_position, read_published
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES
from shelfwise.live.channels import parse_channels
from shelfwise.live.hub import Hub

STAFF = Principal(PrincipalKind.USER, uuid.uuid4(), ROLE_SCOPES[Role.STAFF], Role.STAFF)
EVENTS = 7


async def publish(ctx: AppContext, count: int) -> list[int]:
    """Stamp `count` stock events as the relay would, after whatever is published."""
    async with ctx.driver.connection() as conn:
        base = await newest_position(conn)
        positions = [base + n for n in range(1, count + 1)]
        for position in positions:
            trace: dict[str, Any] | None = (
                {"traceparent": f"00-{position:032x}-{position:016x}-01"} if position % 2 else None
            )
            await conn.execute(
                "INSERT INTO outbox_events (position, type, aggregate_type, aggregate_id,"
                " payload, published_at, trace_context)"
                " VALUES (%s, 'stock.changed', 'stock_level', %s, %s, clock_timestamp(), %s)",
                (
                    position,
                    f"level-{position}",
                    Jsonb({"n": position}),
                    Jsonb(trace) if trace else None,
                ),
            )
    return positions


async def test_the_stream_reads_in_position_order_after_a_cursor(ctx: AppContext) -> None:
    positions = await publish(ctx, EVENTS)
    for after, limit in [(positions[0], 3), (positions[-3], 500), (positions[-1], 5)]:
        async with ctx.driver.connection() as conn:
            page = await read_published(conn, after, limit)
        expected = [p for p in positions if p > after][:limit]
        assert [e.position for e in page] == expected, (after, limit)
        assert [e.aggregate_id for e in page] == [f"level-{p}" for p in expected]
    async with ctx.driver.connection() as conn:
        tail = await read_published(conn, positions[1], 2)
        assert await oldest_position(conn) is not None
    assert [e.position for e in tail] == positions[2:4]
    assert tail[0].payload == {"n": positions[2]}
    assert tail[0].created_at.tzinfo is not None
    # JSONB comes back as Python objects, SQL NULL as None (not JSON null).
    assert {e.trace_context is None for e in tail} == {True, False}


async def test_a_hub_on_the_driver_catches_up_and_resumes_from_the_database(
    ctx: AppContext,
) -> None:
    positions = await publish(ctx, EVENTS)
    hub = Hub(ctx.driver, window=2, batch_size=3)
    hub.head = positions[0] - 1
    assert await hub.catch_up() == EVENTS
    assert hub.head == positions[-1]
    # The window holds the last two: a resume from the first position reads the database.
    subscription, reset = await hub.subscribe(
        parse_channels(["stock"]), STAFF, since=positions[0], transport="sse"
    )
    assert reset is None
    assert [e.position for e in subscription.backlog] == positions[1:]
    hub.unsubscribe(subscription)
