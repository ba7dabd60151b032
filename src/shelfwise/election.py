"""One leader across all processes: a session advisory lock on a dedicated connection.

The outbox relay (`events/relay.py`) and the broker publisher (`broker/publisher.py`) must
each run exactly once across every worker on every machine. Both elect their leader the
same way, here:

- a dedicated autocommit connection tries `pg_try_advisory_lock(key)`; a process that does
  not get it is a standby and tries again every `standby_retry` seconds;
- the winner runs its `lead(conn, stop)` on that same connection for as long as it lasts. The
  lock is session-level: when the leader dies, its connection closes, PostgreSQL drops the
  lock, and a standby takes over within `standby_retry`. Work done on the lock's own
  connection (the relay's stamping transaction, the publisher's stored position) cannot
  outlive the lock;
- a lost connection (`psycopg.Error`: server restarting, network cut, connection killed)
  ends the session; the next one waits a jittered, capped, doubling delay
  (`reconnect.py`), so every worker that lost the same server does not come back in
  lockstep.

`lead` returns when `stop` is set; it raises `psycopg.Error` to start over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog

from shelfwise.reconnect import ReconnectBackoff

log = structlog.get_logger("shelfwise.election")

# The leader's work on the lock's connection; returns once `stop` (its 2nd argument) is set.
Lead = Callable[[psycopg.AsyncConnection[Any], asyncio.Event], Awaitable[None]]


class ElectedSession:
    def __init__(
        self,
        database_url: str,
        *,
        lock_key: int,
        application_name: str,
        standby_retry: float,
        backoff: ReconnectBackoff,
        on_active: Callable[[bool], None],
        lost_event: str,
        log_fields: dict[str, str],
    ) -> None:
        self._url = database_url
        self._lock_key = lock_key
        self._application_name = application_name
        self._standby_retry = standby_retry
        self._backoff = backoff
        self._on_active = on_active
        self._lost_event = lost_event  # the log event of a lost connection, per role
        self._log_fields = log_fields

    async def run(self, stop: asyncio.Event, lead: Lead) -> None:
        """Stand by, lead, reconnect after a lost connection: until `stop` is set."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self._session(stop, lead)
            except psycopg.Error as exc:  # connection lost, server restart, lock conflict
                delay = self._backoff.after(time.monotonic() - started)
                log.warning(
                    self._lost_event, **self._log_fields, error=str(exc), retry_in=round(delay, 2)
                )
                await wait_or_stop(stop, delay)
            finally:
                self._on_active(False)

    async def _session(self, stop: asyncio.Event, lead: Lead) -> None:
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, application_name=self._application_name
        ) as conn:
            while not stop.is_set():
                if await self._try_lock(conn):
                    break
                await wait_or_stop(stop, self._standby_retry)
            else:
                return
            self._on_active(True)
            await lead(conn, stop)

    async def _try_lock(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,))
        row = await cur.fetchone()
        return bool(row and row[0])


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
