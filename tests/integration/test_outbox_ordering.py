"""The outbox stream: commit order, dense positions, exactly once — under concurrency,
relay crashes and competing relays.

Writers insert their events in id order, then commit in an order the test chooses (asyncio
Events, no sleeps), so ids and commit order disagree on purpose. A reader resumes from
its last position the whole time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import psycopg
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from shelfwise.db import sqlalchemy_url
from shelfwise.events import types as event_types
from shelfwise.events.models import OutboxEvent
from shelfwise.events.outbox import Event, PublishedEvent
from shelfwise.events.published import read_published
from shelfwise.events.relay import RELAY_LOCK_KEY, Relay, RelayConfig
from shelfwise.store.unit import unit_of_work
from tests.support import wait_until

WRITERS = 24
TEST_EVENT = "test.event"


@pytest.fixture(autouse=True)
def declared_test_event_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream is the same for every type, and these payloads are no real type's: so
    this module declares its own type, for its tests only (writers refuse an undeclared
    type, `events/types.py`)."""
    monkeypatch.setattr(
        event_types, "KNOWN_EVENT_TYPES", event_types.KNOWN_EVENT_TYPES | {TEST_EVENT}
    )


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    # One connection per open writer transaction: no pool to run dry.
    eng = create_async_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@dataclass
class Writer:
    index: int
    events: int
    inserted: asyncio.Event = field(default_factory=asyncio.Event)
    commit: asyncio.Event = field(default_factory=asyncio.Event)
    committed: asyncio.Event = field(default_factory=asyncio.Event)


async def write(sessions: async_sessionmaker[AsyncSession], writer: Writer) -> None:
    """Insert, then hold the transaction open until told to commit."""
    async with sessions() as session, unit_of_work(session) as unit:
        for n in range(writer.events):
            unit.emit(
                Event(TEST_EVENT, "writer", str(writer.index), {"writer": writer.index, "n": n})
            )
        await unit.flush()  # the rows exist (ids taken) while the transaction stays open
        writer.inserted.set()
        await writer.commit.wait()
    writer.committed.set()


class Reader:
    """Resumes from its last position, like a client reconnecting with Last-Event-ID."""

    def __init__(self, database_url: str, limit: int = 5) -> None:
        self.database_url = database_url
        self.limit = limit
        self.position = 0
        self.seen: list[PublishedEvent] = []

    async def poll(self) -> None:
        # Autocommit, like the hub's driver pool: each page is its own snapshot.
        async with await psycopg.AsyncConnection.connect(
            self.database_url, autocommit=True
        ) as conn:
            page = await read_published(conn, self.position, self.limit)
        for event in page:
            self.seen.append(event)
            self.position = event.position

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            await asyncio.sleep(0)  # yield to the writers; this is not a timing wait


async def published_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.position.is_not(None))
        )
    return int(count or 0)


async def total_count(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)


def assert_exactly_once_dense(seen: list[PublishedEvent], total: int) -> None:
    assert [e.position for e in seen] == list(range(1, total + 1))
    assert len({e.id for e in seen}) == total


async def test_reader_sees_every_event_once_in_commit_order(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    rng = random.Random(5)
    writers = [Writer(i, events=rng.randint(1, 3)) for i in range(WRITERS)]
    total = sum(w.events for w in writers)
    stop = asyncio.Event()
    relay = Relay(database_url, RelayConfig(batch_size=4, poll_interval=0.2), name="t")
    reader = Reader(database_url)
    relay_task = asyncio.create_task(relay.run(stop))
    reader_task = asyncio.create_task(reader.run(stop))
    writer_tasks = []
    # Insert strictly in index order, so ids ascend with the index...
    for writer in writers:
        writer_tasks.append(asyncio.create_task(write(sessions, writer)))
        await writer.inserted.wait()
    # ...then commit in a shuffled order. Half the time the relay publishes each commit
    # before the next one; otherwise several commits land in one relay pass.
    commit_order = writers[:]
    rng.shuffle(commit_order)
    for writer in commit_order:
        writer.commit.set()
        await writer.committed.wait()
        if rng.random() < 0.5:
            await wait_until(
                lambda w=writer: _writer_published(sessions, w), what="relay to publish it"
            )
    await asyncio.gather(*writer_tasks)
    await wait_until(lambda: _has_seen(reader, total), what="reader to see every event")
    stop.set()
    await asyncio.gather(relay_task, reader_task)

    assert_exactly_once_dense(reader.seen, total)
    # Within a transaction, events keep their insertion order.
    for writer in writers:
        mine = [e for e in reader.seen if e.payload["writer"] == writer.index]
        assert [e.payload["n"] for e in mine] == list(range(writer.events))
    # Waited-for commits appear in commit order; ids (insertion order) disagree somewhere,
    # which is exactly what an id-based cursor gets wrong.
    first_seen = list(dict.fromkeys(e.payload["writer"] for e in reader.seen))
    assert first_seen != sorted(first_seen)
    ids_in_stream = [e.id for e in reader.seen]
    assert ids_in_stream != sorted(ids_in_stream)


async def _writer_published(sessions: async_sessionmaker[AsyncSession], writer: Writer) -> bool:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(
                OutboxEvent.aggregate_id == str(writer.index),
                OutboxEvent.position.is_not(None),
            )
        )
    return count == writer.events


async def _at_least(sessions: async_sessionmaker[AsyncSession], n: int) -> bool:
    return await published_count(sessions) >= n


async def _has_seen(reader: Reader, total: int) -> bool:
    """For a reader whose `run` loop is polling (never poll twice at once)."""
    return len(reader.seen) >= total


async def _reader_at(reader: Reader, total: int) -> bool:
    await reader.poll()
    return len(reader.seen) >= total


async def test_an_id_cursor_skips_a_late_commit_but_a_position_cursor_does_not(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    early, late = Writer(0, events=1), Writer(1, events=1)
    early_task = asyncio.create_task(write(sessions, early))
    await early.inserted.wait()
    late_task = asyncio.create_task(write(sessions, late))
    await late.inserted.wait()
    late.commit.set()  # the higher id commits first
    await late.committed.wait()

    stop = asyncio.Event()
    relay = Relay(database_url, RelayConfig(poll_interval=0.2), name="t")
    relay_task = asyncio.create_task(relay.run(stop))
    await wait_until(lambda: _at_least(sessions, 1), what="late event published")
    reader = Reader(database_url)
    await reader.poll()
    last_id_seen = reader.seen[-1].id

    early.commit.set()
    await asyncio.gather(early_task, late_task)
    await wait_until(lambda: _reader_at(reader, 2), what="early event published")
    stop.set()
    await relay_task

    assert [e.payload["writer"] for e in reader.seen] == [1, 0]
    # A reader that had resumed "WHERE id > last id seen" would never get writer 0's event.
    assert reader.seen[1].id < last_id_seen


async def insert_committed(sessions: async_sessionmaker[AsyncSession], count: int) -> None:
    async with sessions() as session, unit_of_work(session) as unit:
        unit.emit(*(Event(TEST_EVENT, "bulk", str(n), {"n": n}) for n in range(count)))


async def test_relay_killed_mid_batch_loses_and_duplicates_nothing(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await insert_committed(sessions, 30)
    in_transaction = asyncio.Event()
    never = asyncio.Event()

    async def hang(positions: list[int]) -> None:
        in_transaction.set()
        await never.wait()

    stop_a = asyncio.Event()
    relay_a = Relay(database_url, RelayConfig(batch_size=10, poll_interval=0.2), before_commit=hang)
    task_a = asyncio.create_task(relay_a.run(stop_a))
    await in_transaction.wait()
    # The server kills the relay's connection with the stamping transaction still open.
    with psycopg.connect(database_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'shelfwise-relay' AND datname = current_database()"
        ).fetchall()
    assert killed == [(True,)]
    task_a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task_a
    assert await published_count(sessions) == 0

    stop_b = asyncio.Event()
    task_b = asyncio.create_task(
        Relay(database_url, RelayConfig(batch_size=10, poll_interval=0.2)).run(stop_b)
    )
    await wait_until(lambda: _at_least(sessions, 30), what="new relay to publish everything")
    stop_b.set()
    await task_b
    reader = Reader(database_url, limit=100)
    await reader.poll()
    assert_exactly_once_dense(reader.seen, 30)


async def test_only_one_relay_is_active_and_a_standby_takes_over(
    database_url: str, sessions: async_sessionmaker[AsyncSession], engine: AsyncEngine
) -> None:
    config = RelayConfig(batch_size=10, poll_interval=0.2, standby_retry=0.1)
    relays = [Relay(database_url, config, name=f"r{i}") for i in range(2)]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(r.run(s)) for r, s in zip(relays, stops, strict=True)]

    async def one_active() -> bool:
        return sum(r.active for r in relays) == 1

    await wait_until(one_active, what="one relay to take the lock")
    await insert_committed(sessions, 25)
    await wait_until(lambda: _at_least(sessions, 25), what="first batch published")
    assert sum(r.active for r in relays) == 1
    async with engine.connect() as conn:
        holders = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"key": RELAY_LOCK_KEY},
        )
    assert holders == 1

    # Stop the active one: the standby takes the lock and carries on from max(position).
    leader = next(i for i, r in enumerate(relays) if r.active)
    stops[leader].set()
    await tasks[leader]
    standby = relays[1 - leader]
    await wait_until(lambda: _is_active(standby), what="standby to take over")
    await insert_committed(sessions, 15)
    await wait_until(lambda: _at_least(sessions, 40), what="second batch published")
    stops[1 - leader].set()
    await tasks[1 - leader]

    reader = Reader(database_url, limit=100)
    await reader.poll()
    assert_exactly_once_dense(reader.seen, 40)
    assert await total_count(sessions) == 40


async def _is_active(relay: Relay) -> bool:
    return relay.active


async def test_a_backlog_is_stamped_in_growing_passes_in_order(
    database_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A full pass doubles the next (up to BACKLOG_GROWTH x batch_size, relay.py): a bulk
    import's backlog costs fewer passes; the stream stays dense and in id order."""
    await insert_committed(sessions, 60)
    passes: list[int] = []

    async def count_pass(positions: list[int]) -> None:
        passes.append(len(positions))

    stop = asyncio.Event()
    relay = Relay(
        database_url, RelayConfig(batch_size=2, poll_interval=0.2), before_commit=count_pass
    )
    task = asyncio.create_task(relay.run(stop))
    await wait_until(lambda: _at_least(sessions, 60), what="the relay to publish the backlog")
    stop.set()
    await task

    assert passes[:5] == [2, 4, 8, 16, 20]  # 20 = BACKLOG_GROWTH x batch_size
    assert sum(passes) == 60
    reader = Reader(database_url, limit=100)
    await reader.poll()
    assert_exactly_once_dense(reader.seen, 60)
    assert [e.id for e in reader.seen] == sorted(e.id for e in reader.seen)
