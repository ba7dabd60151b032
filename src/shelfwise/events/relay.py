"""The outbox relay: gives committed events their stream position, in commit order.

Why a relay at all: `outbox_events.id` comes from a sequence, handed out at INSERT time.
Transaction A can take id 10, transaction B id 11, and B can commit first. A reader that
resumed "after id 11" would never see 10. Positions are therefore stamped *after* commit:

- Exactly one relay is active across all processes and machines. It holds a session-level
  `pg_try_advisory_lock` on its own dedicated connection; the others retry every
  `standby_retry` seconds. If the active relay dies, its connection closes, PostgreSQL
  drops the lock, and a standby takes over (`election.py`, shared with the broker
  publisher).
- The active relay repeatedly runs one short transaction on that same connection:
  `position = max(position) + row_number() OVER (ORDER BY id)` for the visible
  (= committed) unstamped rows, a batch at a time. Uncommitted rows are invisible, so
  they are stamped by a later pass, after everything stamped before them.
- Stamping and locking on one connection means a relay that lost its lock (connection
  gone) has also lost its open transaction: two relays can never stamp at once. The
  UNIQUE constraint on `position` is the backstop.
- A relay killed mid-batch rolls back; nothing was published, the next relay stamps the
  same rows. Each event gets exactly one position.

The relay wakes on NOTIFY `shelfwise_outbox` (rung after commits by `events/doorbell.py`)
and polls every `poll_interval` seconds as a safety net. After a commit it notifies
`shelfwise_stream` with the highest position, for live consumers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import psycopg
import structlog

from shelfwise.election import ElectedSession
from shelfwise.events.doorbell import OUTBOX_CHANNEL
from shelfwise.events.outbox import STREAM_CHANNEL
from shelfwise.observability.metrics import (
    OUTBOX_LAG,
    OUTBOX_PUBLISHED,
    OUTBOX_RELAY_ACTIVE,
    OUTBOX_RELAY_BATCH_SECONDS,
)
from shelfwise.observability.trace_events import record_batch
from shelfwise.observability.tracing import enabled as tracing_enabled
from shelfwise.reconnect import ReconnectBackoff

log = structlog.get_logger("shelfwise.events.relay")

# Any fixed 64-bit key; it only has to be the same for every relay of one database.
RELAY_LOCK_KEY = 0x5348454C46_0001

STAMP_SQL = """
WITH top AS (
    SELECT coalesce(max(position), 0) AS position FROM outbox_events
), batch AS (
    SELECT id, row_number() OVER (ORDER BY id) AS n
      FROM (SELECT id FROM outbox_events
             WHERE position IS NULL
             ORDER BY id
             LIMIT %(batch_size)s) AS unstamped
)
UPDATE outbox_events AS e
   SET position = top.position + batch.n, published_at = clock_timestamp()
  FROM batch, top
 WHERE e.id = batch.id
RETURNING e.position
"""

# With tracing on, also what the publish span links to (`observability/trace_events.py`).
STAMP_TRACED_SQL = (
    STAMP_SQL.rstrip() + ", e.type, e.aggregate_type, e.aggregate_id, e.trace_context\n"
)

# While a backlog lasts (every pass full: a bulk import writes ~2 events per CSV row), each
# pass takes twice the last, up to this many times `batch_size`: fewer per-pass costs (the
# lag read, the NOTIFY, the commit) per event. The stamping SQL and its order are the same.
BACKLOG_GROWTH = 10

LAG_SQL = """
SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8
  FROM (SELECT created_at FROM outbox_events WHERE position IS NULL ORDER BY id LIMIT 1) AS o
"""


@dataclass(frozen=True, slots=True)
class StampedEvent:
    """An event as the relay's traced pass returns it: what its publish span links to."""

    position: int
    type: str
    aggregate_type: str
    aggregate_id: str
    trace_context: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class RelayConfig:
    batch_size: int = 500
    poll_interval: float = 0.5
    standby_retry: float = 1.0
    # After a lost connection: 0.5 s doubling to 5 s, jittered (reconnect.py).
    reconnect_first: float = 0.5
    reconnect_cap: float = 5.0


# Test seam: awaited inside the stamping transaction, before COMMIT.
BeforeCommit = Callable[[list[int]], Awaitable[None]]
AfterPublish = Callable[[int], Awaitable[None]]


class Relay:
    def __init__(
        self,
        database_url: str,
        config: RelayConfig | None = None,
        *,
        name: str = "relay",
        before_commit: BeforeCommit | None = None,
        after_publish: AfterPublish | None = None,
    ) -> None:
        self._url = database_url
        self._config = config or RelayConfig()
        self._name = name
        self._before_commit = before_commit
        # Extra fan-out of "published up to N" after commit (Redis pub/sub across instances).
        self._after_publish = after_publish
        self.active = False  # holds the advisory lock right now

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; reconnect on connection loss, backing off."""
        election = ElectedSession(
            self._url,
            lock_key=RELAY_LOCK_KEY,
            application_name="shelfwise-relay",
            standby_retry=self._config.standby_retry,
            backoff=ReconnectBackoff(self._config.reconnect_first, self._config.reconnect_cap),
            on_active=self._set_active,
            lost_event="relay_connection_lost",
            log_fields={"relay": self._name},
        )
        await election.run(stop, self._lead)

    async def _lead(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> None:
        """Stamp batches on the lock's connection while this relay is the leader."""
        log.info("relay_active", relay=self._name)
        await conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
        size = self._config.batch_size
        while not stop.is_set():
            published = await self.publish_batch(conn, size)
            if published < size:
                size = self._config.batch_size
                await self._wait_for_work(conn)
            else:
                size = min(size * 2, self._config.batch_size * BACKLOG_GROWTH)

    async def publish_batch(
        self, conn: psycopg.AsyncConnection[tuple[bool]], limit: int | None = None
    ) -> int:
        """One stamping transaction of at most `limit` events (default `batch_size`);
        returns how many events it published."""
        started = time.perf_counter()
        started_ns = time.time_ns()
        traced = tracing_enabled()
        async with conn.transaction():
            cur = await conn.execute(
                STAMP_TRACED_SQL if traced else STAMP_SQL,
                {"batch_size": limit or self._config.batch_size},
            )
            rows = await cur.fetchall()
            positions = [int(row[0]) for row in rows]
            if positions:
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (STREAM_CHANNEL, str(max(positions)))
                )
            if self._before_commit is not None:
                await self._before_commit(positions)
        if positions:
            if traced:
                # The connection's rows are typed for the lock query; these are STAMP_TRACED_SQL's.
                stamped = [StampedEvent(*cast(tuple[Any, ...], row)) for row in rows]
                record_batch(
                    "outbox publish",
                    stamped,
                    started_ns=started_ns,
                    destination="outbox",
                    operation="publish",
                )
            OUTBOX_PUBLISHED.inc(len(positions))
            OUTBOX_RELAY_BATCH_SECONDS.observe(time.perf_counter() - started)
            if self._after_publish is not None:
                try:
                    await self._after_publish(max(positions))
                except Exception as exc:  # the NOTIFY and the hubs' polling still wake readers
                    log.warning("relay_after_publish_failed", error=type(exc).__name__)
        lag = await conn.execute(LAG_SQL)
        row = await lag.fetchone()
        OUTBOX_LAG.set(float(row[0]) if row else 0.0)
        return len(positions)

    async def _wait_for_work(self, conn: psycopg.AsyncConnection[tuple[bool]]) -> None:
        """Until a NOTIFY arrives or `poll_interval` passes (the safety net).

        The generators are run to their end, never left with `break`: a suspended
        `notifies()` keeps holding the connection's lock.
        """
        async for _ in conn.notifies(timeout=self._config.poll_interval, stop_after=1):
            pass
        # Several commits may have notified at once: one pass publishes them all.
        async for _ in conn.notifies(timeout=0):
            pass

    def _set_active(self, active: bool) -> None:
        if active != self.active:
            self.active = active
            OUTBOX_RELAY_ACTIVE.set(1 if active else 0)
