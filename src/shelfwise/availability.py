"""Knowing PostgreSQL is unreachable, and failing fast while it is (a circuit breaker).

While the database restarts, every request that needs it fails anyway. Without this
module each one failed in its own way: a 500 from an `OperationalError` that escaped, or
a 503 only after waiting `db_pool_timeout_seconds` for a pool connection that could not
be made. Here the pool and engine doors (`driverpool.py`, `db.py`) turn connection
failures into one domain error, `DatabaseUnavailable` (503 + `Retry-After`), and a
`DatabaseBreaker` remembers that the database is down:

- closed (normal): statements run. A connection failure starts a probe at once.
- open: the probe could not connect. New work is refused immediately with
  `DatabaseUnavailable`, before it takes a pool slot or waits for a connect. The probe
  retries every `probe_interval` seconds; the first connect that succeeds closes the
  breaker, so recovery needs no restart and no request pays for finding out.

Only *connection* failures count (client-side errors with no SQLSTATE, class 08, and
the 57P01-57P03 shutdown/start-up states): a statement timeout, a deadlock or a
constraint violation says nothing about reachability. One failed connection that the
probe disproves (a single connection killed by an admin) never opens the breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shelfwise.errors import DatabaseUnavailable
from shelfwise.observability.metrics import (
    DEPENDENCY_FAILURES,
    DEPENDENCY_FAST_FAILS,
    DEPENDENCY_UP,
)

log = structlog.get_logger("shelfwise.availability")

# admin_shutdown, crash_shutdown, cannot_connect_now (starting up / shutting down).
SHUTDOWN_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# libpq's connect_timeout (whole seconds, 2 at least): a database host that drops packets
# must not hold a request for the kernel's TCP timeout (minutes).
CONNECT_TIMEOUT_SECONDS = 3
# psycopg_pool gives a lost connection's re-connects up after this long instead of backing
# off for minutes (1, 2, 4, 8, 16 s...): once the database is back, the next request
# grows the pool at once.
RECONNECT_GIVE_UP_SECONDS = 5.0
# A probe's verdict is due within this long (connect + `SELECT 1`). Through pgbouncer the
# connect succeeds even while PostgreSQL is gone (pgbouncer answers the login itself) and
# the query waits in its queue for a server connection; cancelling that wait does not
# work either (pgbouncer 1.18 ignores a cancel request for a client that holds no server
# connection, and psycopg then waits 5 s before dropping the connection). So the probe
# runs as its own task and the breaker stops waiting for it after this long.
PROBE_TIMEOUT_SECONDS = 2.0


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` means "the database cannot be reached", not "this statement failed"."""
    if isinstance(exc, DBAPIError):
        exc = exc.orig  # type: ignore[assignment]
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in SHUTDOWN_SQLSTATES


class DatabaseBreaker:
    def __init__(
        self,
        url: str,
        *,
        probe_interval: float = 0.5,
        connect_timeout: int = CONNECT_TIMEOUT_SECONDS,
        probe_timeout: float = PROBE_TIMEOUT_SECONDS,
        retry_after: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.probe_interval = probe_interval
        self._connect_timeout = connect_timeout
        self._probe_timeout = probe_timeout
        # Probes given up on that are still finishing (see PROBE_TIMEOUT_SECONDS).
        self._stragglers: set[asyncio.Task[bool]] = set()
        self.retry_after = retry_after
        self._clock = clock
        self.open_since: float | None = None
        self._probe: asyncio.Task[None] | None = None
        # Called once each time the breaker opens: doors that keep callers waiting (the
        # driver pool's queue for a connection) let them go with `unavailable()`.
        self.on_open: list[Callable[[], Awaitable[None]]] = []
        DEPENDENCY_UP.labels("database").set(1)

    @property
    def is_open(self) -> bool:
        return self.open_since is not None

    def unavailable(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            "The database is unreachable; retry shortly.",
            headers={"Retry-After": str(self.retry_after)},
        )

    def check(self) -> None:
        """Refuse at once while the database is known to be down."""
        if self.open_since is not None:
            DEPENDENCY_FAST_FAILS.labels("database").inc()
            raise self.unavailable()

    def failed(self, exc: BaseException, component: str) -> DatabaseUnavailable:
        """Record a connection failure seen by `component`; the error to raise instead."""
        DEPENDENCY_FAILURES.labels("database", component).inc()
        if self._probe is None or self._probe.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a synchronous caller: nothing to probe with
                return self.unavailable()
            log.warning("database_connection_failed", component=component, error=str(exc))
            self._probe = loop.create_task(self._probe_until_reachable(), name="database-probe")
        return self.unavailable()

    async def _probe_until_reachable(self) -> None:
        while True:
            if await self.reachable():
                if self.open_since is not None:
                    log.info("database_reachable", down_seconds=self._clock() - self.open_since)
                    self.open_since = None
                    DEPENDENCY_UP.labels("database").set(1)
                return
            if self.open_since is None:
                self.open_since = self._clock()
                DEPENDENCY_UP.labels("database").set(0)
                log.error("database_unreachable", retry_every=self.probe_interval)
                for opened in list(self.on_open):
                    await opened()
            await asyncio.sleep(self.probe_interval)

    async def reachable(self) -> bool:
        """One probe: can a new connection be made and answer within `probe_timeout`?

        A probe that has not answered by then counts as "no"; it is cancelled and left to
        finish in the background (bounded: psycopg drops the connection within 5 s)."""
        attempt = asyncio.ensure_future(self._connect_and_select())
        try:
            await asyncio.wait({attempt}, timeout=self._probe_timeout)
        finally:  # also when this probe itself is cancelled (shutdown)
            if not attempt.done():
                attempt.cancel()
                self._stragglers.add(attempt)
                attempt.add_done_callback(self._stragglers.discard)
        return not attempt.cancelled() and attempt.done() and attempt.result()

    async def _connect_and_select(self) -> bool:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                application_name="shelfwise-probe",
            )
            async with conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, OSError):
            return False
        return True

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._stragglers:
            await asyncio.wait(set(self._stragglers), timeout=self._probe_timeout)


def guard_engine(engine: AsyncEngine, breaker: DatabaseBreaker) -> None:
    """The SQLAlchemy door: refuse new connections while the breaker is open, bound the
    connect time, and raise `DatabaseUnavailable` for connection failures (SQLAlchemy
    still invalidates the dead connection, and the pool's others, as it would)."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _before_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        breaker.check()
        cparams.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        # A task cancelled mid-query (shutdown, timeouts) also invalidates the connection
        # (`is_disconnect`); its CancelledError must propagate, not become "database
        # unavailable": swallowed, the task would never stop (an instance hung on SIGTERM).
        if not isinstance(context.original_exception, Exception):
            return None
        if context.is_pre_ping or not (
            context.is_disconnect or is_connection_failure(context.original_exception)
        ):
            return None
        return breaker.failed(context.original_exception, "engine")
