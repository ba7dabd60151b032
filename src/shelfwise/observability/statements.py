"""Slow statements: timed for both pools, logged with normalized SQL, never parameters.

SQLAlchemy statements are timed by engine events (`before/after_cursor_execute`); the
psycopg driver pool's by its cursor class (`TimedCursor`). A statement slower than the
threshold is logged as `db_slow_statement` with its duration, the SQL with literals
replaced by `?` and whitespace collapsed (parameters are never logged: they hold
e-mail addresses and token hashes), the request id (bound in the logging context by the
request-id middleware) and the current OpenTelemetry trace id when a span is active.
"""

from __future__ import annotations

import re
import time
from typing import Any

import structlog
from opentelemetry import trace
from psycopg import AsyncCursor, sql
from psycopg.rows import Row
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from shelfwise.observability.metrics import DB_SLOW_STATEMENTS, DB_STATEMENT_DURATION

log = structlog.get_logger("shelfwise.db")
SQL_CAP = 2000
_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$.])-?\d+(?:\.\d+)?(?![\w.])")
_SPACE = re.compile(r"\s+")
_START = "shelfwise_statement_started"


def normalize_sql(statement: str) -> str:
    """One line, string and number literals as `?`, capped: safe to log and to group by."""
    text = _STRING.sub("?", statement)
    text = _NUMBER.sub("?", text)
    return _SPACE.sub(" ", text).strip()[:SQL_CAP]


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class SlowStatements:
    """Times statements of one pool; logs and counts those over `threshold_ms`."""

    def __init__(self, pool: str, threshold_ms: float) -> None:
        self.pool = pool
        self.threshold = threshold_ms / 1000
        self._histogram = DB_STATEMENT_DURATION.labels(pool)
        self._slow = DB_SLOW_STATEMENTS.labels(pool)

    def observe(self, statement: Any, seconds: float, conn: Any = None) -> None:
        self._histogram.observe(seconds)
        if seconds < self.threshold:
            return
        self._slow.inc()
        log.warning(
            "db_slow_statement",
            pool=self.pool,
            duration_ms=round(seconds * 1000, 1),
            threshold_ms=round(self.threshold * 1000),
            statement=normalize_sql(_statement_text(statement, conn)),
            # Explicit, not only through the logging context: greenlets and threads
            # that run statements must still carry them.
            request_id=structlog.contextvars.get_contextvars().get("request_id"),
            trace_id=current_trace_id(),
        )


def _statement_text(statement: Any, conn: Any) -> str:
    if isinstance(statement, bytes):
        return statement.decode(errors="replace")
    if isinstance(statement, sql.Composable) and conn is not None:
        try:
            return statement.as_string(conn)
        except Exception:  # a statement that cannot render still gets logged
            return repr(statement)
    return str(statement)


def time_engine_statements(engine: AsyncEngine, threshold_ms: float) -> None:
    """Attach slow-statement timing to a SQLAlchemy engine (its `sqlalchemy` pool)."""
    slow = SlowStatements("sqlalchemy", threshold_ms)
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _started(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        conn.info.setdefault(_START, []).append(time.perf_counter())

    @event.listens_for(sync_engine, "after_cursor_execute")
    def _finished(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        started = conn.info.get(_START)
        if started:
            slow.observe(statement, time.perf_counter() - started.pop())

    @event.listens_for(sync_engine, "handle_error")
    def _failed(context: Any) -> None:
        # A failed statement never reaches after_cursor_execute: drop its start time.
        conn = context.connection
        started = conn.info.get(_START) if conn is not None else None
        if started:
            started.pop()


class TimedCursor(AsyncCursor[Row]):
    """psycopg's async cursor, timing each `execute` for the driver pool."""

    slow: SlowStatements | None = None  # set per pool by `timed_cursor_class`

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> TimedCursor[Row]:
        started = time.perf_counter()
        try:
            await super().execute(query, params, **kwargs)
        finally:
            if self.slow is not None:
                self.slow.observe(query, time.perf_counter() - started, self.connection)
        return self


def timed_cursor_class(pool: str, threshold_ms: float) -> type[TimedCursor[Any]]:
    return type("TimedCursor", (TimedCursor,), {"slow": SlowStatements(pool, threshold_ms)})
