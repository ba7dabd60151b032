"""Waking the outbox relay after a commit, not inside it.

A `pg_notify` in the writing transaction would be delivered at commit, exactly when a
wake-up is due. But PostgreSQL serialises the commits of all notifying transactions on
one database-wide lock, held through the WAL flush: measured on this machine, 15
connections committing one-row inserts fell from ~3,500 to ~1,050 commits/s once each
transaction also notified (docs/decisions/0013). So after a commit that wrote to the
outbox, the process's `Doorbell` sends one NOTIFY from its own autocommit connection,
and every commit that happens while that NOTIFY is in flight shares the next one.

Who rings: the unit of work (`store/unit.py`), after its own commit — every writer of
events goes through it, the CSV import's batches included, so there is no session hook
and no second place that rings.

Nothing is lost if the ring is: a process that dies between its commit and the ring,
or a NOTIFY that fails, leaves the events to the relay's poll (`relay_poll_seconds`).
Rollbacks never ring.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

import psycopg
import structlog

log = structlog.get_logger("shelfwise.events")

# Committed outbox rows are waiting to be stamped by the relay.
OUTBOX_CHANNEL = "shelfwise_outbox"
DOORBELL = "shelfwise.doorbell"  # Session.info key: this process's Doorbell


class Doorbell:
    def __init__(self, url: str, channel: str = OUTBOX_CHANNEL) -> None:
        self._url = url
        self._sql = f"NOTIFY {channel}".encode()
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def ring(self) -> None:
        """Ask for a NOTIFY soon. Synchronous and cheap: called from commit hooks."""
        self._pending = True
        if self._task is not None and not self._task.done():
            return  # the running sender sends once more before it stops
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a synchronous tool): the relay's poll will see it
        # In a context of its own: the sender serves every commit that rings while it
        # runs, so it must not carry the first one's request id or trace (its NOTIFY is
        # no statement of that request's).
        self._task = loop.create_task(
            self._send(), name="outbox-doorbell", context=contextvars.Context()
        )

    async def _send(self) -> None:
        while self._pending:
            self._pending = False
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, application_name="shelfwise-doorbell"
                    )
                await self._conn.execute(self._sql)
            except Exception as exc:  # the poll is the safety net; never fail a request
                log.warning("outbox_doorbell_failed", error=type(exc).__name__)
                await self._drop()
                return

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to clean up
                await conn.close()

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=2)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        await self._drop()
