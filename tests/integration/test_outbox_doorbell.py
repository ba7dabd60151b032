"""The relay's wake-up is rung after a commit that wrote events, from outside that
transaction (docs/decisions/0013): never on rollback, never by the writer's own backend."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.events.doorbell import OUTBOX_CHANNEL
from shelfwise.events.outbox import emit


class Abandon(Exception):
    pass


async def test_a_commit_that_wrote_events_rings_once_a_rollback_never(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    rings: list[None] = []
    monkeypatch.setattr(ctx.db.doorbell, "ring", lambda: rings.append(None))

    async def emit_then_abandon() -> None:
        async with ctx.db.sessions() as session, session.begin():
            await emit(session, type="test.event", aggregate=("test", 1), payload={})
            raise Abandon

    with pytest.raises(Abandon):
        await emit_then_abandon()
    assert rings == []

    async with ctx.db.sessions() as session, session.begin():
        await session.execute(text("SELECT 1"))  # a transaction without events
    assert rings == []

    async with ctx.db.sessions() as session, session.begin():
        await emit(session, type="test.event", aggregate=("test", 2), payload={})
    assert len(rings) == 1


async def test_the_notify_comes_from_the_doorbell_not_the_writing_transaction(
    ctx: AppContext, database_url: str
) -> None:
    listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        await listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        async with ctx.db.sessions() as session, session.begin():
            writer_pid = await session.scalar(text("SELECT pg_backend_pid()"))
            await emit(session, type="test.event", aggregate=("test", 3), payload={})
        received = [n async for n in listener.notifies(timeout=10, stop_after=1)]
    finally:
        await listener.close()
    assert len(received) == 1, "no NOTIFY within 10 s of the commit"
    assert received[0].pid != writer_pid  # the writer's commit did not take the notify lock
