"""The relay's wake-up is rung after a commit that wrote events, from outside that
transaction (docs/decisions/0013): never on rollback, never by the writer's own backend.

Every event reaches the outbox through the unit of work (`store/unit.py`); here over a
session, as the catalog, webhooks, the low-stock report and the CSV import's batches use
it (the stores' units over the driver pool ring the same way: `_ring` after COMMIT)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.context import AppContext
from shelfwise.events.doorbell import OUTBOX_CHANNEL
from shelfwise.events.outbox import Event
from shelfwise.events.payloads import product_deleted
from shelfwise.store.unit import unit_of_work

Emit = Callable[[Event], Awaitable[None]]
Writer = Callable[[AsyncSession], AbstractAsyncContextManager[Emit]]


@asynccontextmanager
async def through_the_unit(session: AsyncSession) -> AsyncIterator[Emit]:
    async with unit_of_work(session) as unit:

        async def emit(event: Event) -> None:
            unit.emit(event)

        yield emit


@pytest.fixture(params=[through_the_unit], ids=["unit"])
def writer(request: pytest.FixtureRequest) -> Writer:
    chosen: Writer = request.param
    return chosen


def an_event() -> Event:
    # A real type with its real payload: for a product that never existed (no consumer
    # of this test's database acts on it).
    return product_deleted(uuid.uuid4())


class Abandon(Exception):
    pass


async def test_a_commit_that_wrote_events_rings_once_a_rollback_never(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch, writer: Writer
) -> None:
    rings: list[None] = []
    monkeypatch.setattr(ctx.db.doorbell, "ring", lambda: rings.append(None))

    async def emit_then_abandon() -> None:
        async with ctx.db.sessions() as session, writer(session) as emit:
            await emit(an_event())
            raise Abandon

    with pytest.raises(Abandon):
        await emit_then_abandon()
    assert rings == []

    async with ctx.db.sessions() as session, writer(session):
        await session.execute(text("SELECT 1"))  # a transaction without events
    assert rings == []

    async with ctx.db.sessions() as session, writer(session) as emit:
        await emit(an_event())
    assert len(rings) == 1


async def test_the_notify_comes_from_the_doorbell_not_the_writing_transaction(
    ctx: AppContext, database_url: str, writer: Writer
) -> None:
    listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        await listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        async with ctx.db.sessions() as session, writer(session) as emit:
            writer_pid = await session.scalar(text("SELECT pg_backend_pid()"))
            await emit(an_event())
        received = [n async for n in listener.notifies(timeout=10, stop_after=1)]
    finally:
        await listener.close()
    assert len(received) == 1, "no NOTIFY within 10 s of the commit"
    assert received[0].pid != writer_pid  # the writer's commit did not take the notify lock
