"""Connection pools: in use, idle, waiters, wait time, timeouts, and connections held too long.

Both pools of a process are watched the same way:

- `ObservedQueuePool` — SQLAlchemy's asyncio queue pool, timing `_do_get` (the wait for a
  connection) and counting its timeouts;
- `ObservedConnectionPool` — psycopg_pool's, timing `getconn` and counting `PoolTimeout`.

Waiters are the requests inside that wait right now. On the event loop a request that
is inside it at scrape time is necessarily suspended — waiting — so the count is exact.

Each checkout records when it happened, the frames that took it up to the first one
outside libraries (code objects only, usually 3 to 8 frames; lines are read when reported),
and the asyncio task it happened in. A daemon thread scans the checkouts: one held longer
than `db_connection_held_warn_seconds` is logged once as `db_connection_held_too_long`
with the code that took it and a stack: those frames, then the coroutines the task is
awaiting through at report time (the rest of the stack, read only for the rare checkout
that is reported instead of walking ~60 frames on every checkout of every order). In
SQLAlchemy a checkout runs inside a greenlet whose own stack starts at SQLAlchemy's
internals, so the walk goes on into the parent greenlet's frame: the stack names the code
that called `session.execute`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

import greenlet  # type: ignore[import-untyped]
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import event
from sqlalchemy.exc import TimeoutError as SQLAlchemyPoolTimeout
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from shelfwise.observability.metrics import DB_CONNECTION_LEAKS, DB_POOL_TIMEOUTS, DB_POOL_WAIT

log = structlog.get_logger("shelfwise.db")
STACK_LIMIT = 60
_LIBRARY_MARKERS = (
    "/site-packages/",
    "/asyncio/",
    "/contextlib.py",
    "/threading.py",
    __file__,  # this module's own checkout hooks
    "/shelfwise/driverpool.py",
    "/shelfwise/db.py",
)


# (code, f_lasti) pairs, innermost first. Line numbers are computed only when reported:
# `f_lineno` costs a line-table search per frame, `f_lasti` is a plain read.
RawStack = list[tuple[CodeType, int]]


@functools.lru_cache(maxsize=4096)  # one entry per source file (and `<...>` name)
def _library_file(filename: str) -> bool:
    # `<...>`: SQLAlchemy's compiled wrappers
    return filename.startswith("<") or any(marker in filename for marker in _LIBRARY_MARKERS)


def _is_library(code: CodeType) -> bool:
    return _library_file(code.co_filename)


def _walk_to_application(frame: FrameType | None, into: RawStack) -> bool:
    """Append frames outwards up to and including the first application frame; True once
    it is in."""
    while frame is not None and len(into) < STACK_LIMIT:
        code = frame.f_code
        into.append((code, frame.f_lasti))
        if not _is_library(code):
            return True
        frame = frame.f_back
    return False


def capture_taker() -> RawStack:
    """The frames taking a connection, innermost first, up to the code to blame: cheap
    enough for every checkout (the rest of the stack is read only when reported)."""
    stack: RawStack = []
    if not _walk_to_application(sys._getframe(2), stack):
        parent = greenlet.getcurrent().parent  # SQLAlchemy: the coroutines awaiting it
        if parent is not None:
            _walk_to_application(parent.gr_frame, stack)
    return stack


def awaiting_stack(task: asyncio.Task[Any] | None) -> RawStack:
    """The coroutines `task` is awaiting through right now, innermost first (empty once
    it is done). Read from the scanner's thread: attribute reads only, under the GIL."""
    chain: RawStack = []
    awaitable: Any = task.get_coro() if task is not None else None
    while awaitable is not None and len(chain) < STACK_LIMIT:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            break
        chain.append((frame.f_code, frame.f_lasti))
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return chain[::-1]


def held_stack(taker: RawStack, task: asyncio.Task[Any] | None) -> RawStack:
    """The taker's frames, then the awaiting coroutines outside them (innermost first)."""
    chain = awaiting_stack(task)
    if taker:
        blamed = taker[-1][0]
        for index, (code, _) in enumerate(chain):
            if code is blamed:
                return taker + chain[index + 1 :]
    return taker + chain


def _line(code: CodeType, lasti: int) -> int:
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


def format_stack(stack: RawStack) -> traceback.StackSummary:
    frames = [(code.co_filename, _line(code, at), code.co_qualname, None) for code, at in stack]
    return traceback.StackSummary.from_list(frames[::-1])  # outermost first


def application_frame(stack: RawStack) -> str | None:
    """The innermost frame outside libraries: the code to blame."""
    for code, at in stack:
        if not _is_library(code):
            return f"{code.co_qualname} ({code.co_filename}:{_line(code, at)})"
    return None


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop (a synchronous checkout)
        return None


@dataclass(slots=True)
class Checkout:
    started: float
    taker: RawStack
    task: asyncio.Task[Any] | None
    reported: bool = False


@dataclass(eq=False)  # hashed by identity: the scanner keeps them in a WeakSet
class HeldConnections:
    """The checkouts of one pool, for the leak scanner."""

    pool: str
    warn_after: float
    held: dict[int, Checkout] = field(default_factory=dict)

    def taken(self, key: int) -> None:
        self.held[key] = Checkout(time.monotonic(), capture_taker(), _current_task())

    def returned(self, key: int) -> None:
        self.held.pop(key, None)

    def report_overdue(self, now: float) -> None:
        for checkout in list(self.held.values()):
            held_for = now - checkout.started
            if checkout.reported or held_for < self.warn_after:
                continue
            checkout.reported = True
            DB_CONNECTION_LEAKS.labels(self.pool).inc()
            stack = held_stack(checkout.taker, checkout.task)
            log.error(
                "db_connection_held_too_long",
                pool=self.pool,
                held_seconds=round(held_for, 1),
                threshold_seconds=self.warn_after,
                taken_by=application_frame(checkout.taker),
                stack="".join(format_stack(stack).format()),
            )


class _LeakScanner:
    """One daemon thread per process scanning every pool's checkouts."""

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[HeldConnections] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.interval = 1.0

    def watch(self, held: HeldConnections) -> None:
        with self._lock:
            self.pools.add(held)
            self.interval = min(self.interval, max(held.warn_after / 4, 0.05))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db-leaks", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            now = time.monotonic()
            for held in list(self.pools):
                try:
                    held.report_overdue(now)
                except Exception as exc:  # the scanner must outlive any one report
                    log.warning("db_leak_scan_failed", error=type(exc).__name__)


SCANNER = _LeakScanner()


# -- gauges read at scrape time -----------------------------------------------------------


class _PoolGauges(Collector):
    """In use / idle / waiters / max size of every live pool, read when scraped."""

    def __init__(self) -> None:
        self.pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ids = itertools.count()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "shelfwise_db_pool_connections",
            "Pooled connections by pool and state (in_use, idle).",
            labels=["pool", "state"],
        )
        waiters = GaugeMetricFamily(
            "shelfwise_db_pool_waiters",
            "Requests waiting for a pooled connection right now.",
            labels=["pool"],
        )
        capacity = GaugeMetricFamily(
            "shelfwise_db_pool_max_connections",
            "The most connections the pool may open (size + overflow).",
            labels=["pool"],
        )
        totals: dict[str, list[float]] = {}
        for pool in list(self.pools):
            in_use, idle, waiting, most = pool.pool_numbers()
            row = totals.setdefault(pool.pool_label, [0.0, 0.0, 0.0, 0.0])
            for index, value in enumerate((in_use, idle, waiting, most)):
                row[index] += value
        for name, (in_use, idle, waiting, most) in sorted(totals.items()):
            connections.add_metric([name, "in_use"], in_use)
            connections.add_metric([name, "idle"], idle)
            waiters.add_metric([name], waiting)
            capacity.add_metric([name], most)
        yield from (connections, waiters, capacity)

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return list(self.collect())


POOL_GAUGES = _PoolGauges()
REGISTRY.register(POOL_GAUGES)


class ObservedQueuePool(AsyncAdaptedQueuePool):
    """SQLAlchemy's asyncio pool, observed (pass as `poolclass`; see `observe_engine_pool`)."""

    pool_label = "sqlalchemy"
    waiting = 0

    def _do_get(self) -> ConnectionPoolEntry:
        started = time.perf_counter()
        self.waiting += 1
        try:
            return super()._do_get()
        except SQLAlchemyPoolTimeout:
            DB_POOL_TIMEOUTS.labels(self.pool_label).inc()
            raise
        finally:
            self.waiting -= 1
            DB_POOL_WAIT.labels(self.pool_label).observe(time.perf_counter() - started)

    def pool_numbers(self) -> tuple[int, int, int, int]:
        return self.checkedout(), self.checkedin(), self.waiting, self.size() + self._max_overflow


# SQLAlchemy names a pool's logger after its class and quiets only its own namespace:
# keep "Pool disposed" chatter at the level it had as AsyncAdaptedQueuePool.
logging.getLogger(f"{__name__}.{ObservedQueuePool.__name__}").setLevel(logging.WARNING)


def observe_engine_pool(pool: Any, warn_after: float) -> None:
    """Register an engine's pool for the gauges and the leak scanner."""
    if not isinstance(pool, ObservedQueuePool):
        return
    held = HeldConnections(pool.pool_label, warn_after)
    pool.held = held  # type: ignore[attr-defined]  # keeps the scanner's weak reference alive
    POOL_GAUGES.pools.add(pool)
    SCANNER.watch(held)

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        held.taken(id(record))

    @event.listens_for(pool, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        held.returned(id(record))


class _DriverPoolView:
    """What the gauges read of a psycopg pool (which has no slot for our attributes)."""

    def __init__(self, pool: AsyncConnectionPool[Any], label: str, warn_after: float) -> None:
        self.pool = pool
        self.pool_label = label
        self.waiting = 0
        self.held = HeldConnections(label, warn_after)

    def pool_numbers(self) -> tuple[int, int, int, int]:
        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        return size - idle, idle, self.waiting, self.pool.max_size


def observe_driver_pool(pool: AsyncConnectionPool[Any], label: str, warn_after: float) -> None:
    """Wrap a psycopg pool's `getconn`/`putconn` (which `connection()` calls) on the
    instance, so it composes with any pool subclass: wait time, timeouts, waiters, leaks."""
    view = _DriverPoolView(pool, label, warn_after)
    getconn, putconn = pool.getconn, pool.putconn
    wait, timeouts = DB_POOL_WAIT.labels(label), DB_POOL_TIMEOUTS.labels(label)

    async def observed_getconn(timeout: float | None = None) -> AsyncConnection[Any]:  # noqa: ASYNC109 (psycopg's signature)
        started = time.perf_counter()
        view.waiting += 1
        try:
            conn: AsyncConnection[Any] = await getconn(timeout)
        except PoolTimeout:
            timeouts.inc()
            raise
        finally:
            view.waiting -= 1
            wait.observe(time.perf_counter() - started)
        view.held.taken(id(conn))
        return conn

    async def observed_putconn(conn: AsyncConnection[Any]) -> None:
        view.held.returned(id(conn))
        await putconn(conn)

    pool.getconn = observed_getconn  # type: ignore[method-assign]
    pool.putconn = observed_putconn  # type: ignore[method-assign]
    pool.shelfwise_view = view  # type: ignore[attr-defined]  # lives as long as the pool
    POOL_GAUGES.pools.add(view)
    SCANNER.watch(view.held)
