"""The unit of work of the inventory core: one transaction on one psycopg connection.

`run_unit(source, work, use_case=...)` opens a transaction, hands `work` a `UnitOfWork`,
and commits only if `work` returned. Around it:

- the connection comes from the driver pool (`DriverPool`), or is the one under a
  SQLAlchemy session (`AsyncSession`) for callers that still hold one: either way the
  statements run on psycopg itself, with the SQL named in `store/sql.py`;
- serialization failures and deadlocks are retried from the start
  (`transactions.retrying`), with backoff and full jitter;
- a lost connection becomes `DatabaseUnavailable` (503 with Retry-After at the HTTP
  edge) at the connection's own door (`DriverPool.connection`, the engine's handler in
  `db.py`, both through `availability.py`): not wrapped a second time here;
- events are buffered by `emit` and written with one INSERT just before COMMIT, in the
  order emitted; an event type that is not an `EventType` is refused at `emit` (it would
  otherwise reach no consumer; `events/types.py`);
- after the commit (never after a rollback) the process's doorbell wakes the relay. This
  is how every writer of events wakes it, without exception — the stores, the CSV
  import's batches, and the catalog, webhook and low-stock use cases that still hold a
  session (`unit_of_work(session)`: their ORM statements and the unit's run in the same
  transaction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise import batches
from shelfwise.batches import Batch
from shelfwise.db import driver_connection
from shelfwise.driverpool import DriverPool
from shelfwise.events.doorbell import DOORBELL, Doorbell
from shelfwise.events.outbox import Event
from shelfwise.events.types import UnknownEventType as UnknownEventType
from shelfwise.events.types import require_known
from shelfwise.store import sql
from shelfwise.transactions import retrying

T = TypeVar("T")
Source = DriverPool | AsyncSession


@dataclass
class UnitOfWork:
    conn: AsyncConnection[Any]
    # Set when the unit's statements travel in batches (`batches.py`): then every
    # statement goes through it, or it would overtake what is still queued.
    batch: Batch | None = None
    pending: list[Event] = field(default_factory=list)
    wrote_events: bool = False

    def emit(self, *events: Event) -> None:
        require_known(event.type for event in events)
        self.pending.extend(events)

    def mark_events_written(self) -> None:
        """For a statement that wrote its events itself (placement's WRITE_ORDER)."""
        self.wrote_events = True

    async def flush(self) -> None:
        """Write the buffered events (one statement), in the order they were emitted."""
        if not self.pending:
            return
        events, self.pending = self.pending, []
        params = {
            "types": [e.type for e in events],
            "aggregate_types": [e.aggregate_type for e in events],
            "aggregate_ids": [e.aggregate_id for e in events],
            "payloads": [Jsonb(e.payload) for e in events],
            "versions": [e.version for e in events],
            "trace_contexts": [Jsonb(e.trace_context) if e.trace_context else None for e in events],
        }
        if self.batch is not None:
            self.batch.queue(sql.INSERT_EVENTS, params)  # sent with COMMIT
        else:
            await self.conn.execute(sql.INSERT_EVENTS, params)
        self.wrote_events = True


@asynccontextmanager
async def _transaction(source: Source, batched: bool) -> AsyncIterator[UnitOfWork]:
    if isinstance(source, DriverPool) and batched:
        async with batches.transaction(source) as batch:
            yield UnitOfWork(batch.conn, batch)
    elif isinstance(source, DriverPool):
        async with source.transaction() as conn:
            yield UnitOfWork(conn)
    else:
        async with source.begin():
            yield UnitOfWork(await driver_connection(source))


@asynccontextmanager
async def unit_of_work(
    source: Source, *, doorbell: Doorbell | None = None, batched: bool = False
) -> AsyncIterator[UnitOfWork]:
    """One transaction, no retries (for callers that own their retry policy, such as
    the CSV import's batches, and use cases on a session whose ORM work shares the
    transaction: catalog, webhooks).
    `batched` (driver pool only): BEGIN, the unit's queued statements and COMMIT travel
    in batches of one round trip each (`batches.transaction`, docs/decisions/0041)."""
    async with _transaction(source, batched) as unit:
        yield unit
        await unit.flush()
    if unit.wrote_events:
        _ring(source, doorbell)


def _ring(source: Source, doorbell: Doorbell | None) -> None:
    if doorbell is None and isinstance(source, AsyncSession):
        found = source.info.get(DOORBELL)
        doorbell = found if isinstance(found, Doorbell) else None
    if doorbell is not None:
        doorbell.ring()  # no doorbell (a CLI tool): the relay's poll picks the events up


async def run_unit(
    source: Source,
    work: Callable[[UnitOfWork], Awaitable[T]],
    *,
    use_case: str,
    doorbell: Doorbell | None = None,
    attempts: int = 5,
    batched: bool = False,
) -> T:
    """`work` in a unit of work, retried from the start on the SQLSTATEs of
    `transactions.RETRYABLE_SQLSTATES` (40001, 40P01, and 26000 for a batch whose prepared
    statement vanished)."""

    async def once() -> T:
        async with unit_of_work(source, doorbell=doorbell, batched=batched) as unit:
            return await work(unit)

    return await retrying(once, use_case=use_case, attempts=attempts)
