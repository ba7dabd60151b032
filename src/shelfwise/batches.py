"""Statements sent together: one simple query, one round trip (docs/decisions/0041).

Placing an order runs a handful of statements in two round trips. psycopg's pipeline
mode could send them together, but it pays a send, a poll and a result hand-off per
statement (~25 µs of the API process's CPU each, measured). A `Batch` instead queues
statements and sends them as ONE simple-protocol query, `EXECUTE a(...); EXECUTE b(...)`:

- parameters are bound client-side by psycopg's `ClientCursor.mogrify` (libpq's quoting
  in the connection's encoding: values, never SQL, come from the caller);
- a statement with parameters is prepared on the server (SQL-level `PREPARE`, named
  after its text) the first time a batch carries it on a connection, so the server plans
  it once per connection as it does psycopg's own prepared statements. Not where the
  pool prepares nothing (`DriverPool(prepare=False)`: behind a transaction-pooling
  pgbouncer a prepared statement is missing on the next server connection); there the
  statement's text travels, bound;
- PostgreSQL runs a simple query's statements in order, each with its own snapshot under
  READ COMMITTED, as if sent one by one, and skips the rest after the first error.

A statement's rows are read with `Pending.fetchone()`; the first read of anything still
queued sends the whole queue.

Which statements a connection holds is remembered per connection, and read again from
the server when it may have changed: `PREPARE` is not undone by a ROLLBACK, and psycopg
sends `DEALLOCATE ALL` after a ROLLBACK it sees (also to a savepoint) on a connection
where it prepared statements of its own. A batch that meets a statement gone anyway
(another user of the connection rolled back) fails with 26000, which
`transactions.retrying` retries from the start.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, LiteralString

from psycopg import AsyncConnection, AsyncCursor, pq
from psycopg.client_cursor import ClientCursorMixin
from psycopg.errors import InvalidSqlStatementName
from psycopg.rows import TupleRow, tuple_row

from shelfwise.driverpool import DriverPool, Params

BEGIN: LiteralString = "BEGIN"
COMMIT: LiteralString = "COMMIT"
ROLLBACK: LiteralString = "ROLLBACK"
TUPLES_OK = pq.ExecStatus.TUPLES_OK  # a statement that returns rows (maybe none)

_PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?([sbt%])")
KNOWN_STATEMENTS = "SELECT name FROM pg_prepared_statements WHERE starts_with(name, 'shelfwise_')"
# Which named statements each connection holds; a connection not in here is asked.
_prepared: weakref.WeakKeyDictionary[AsyncConnection[Any], set[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement as the server prepares it: `$n` placeholders, named after its text."""

    name: str
    prepare: str  # PREPARE <name> AS <the statement with $1, $2, ...>
    execute: str  # EXECUTE <name>(%s, %s, ...), for mogrify
    names: tuple[str, ...] | None  # the %(name)s parameters in $n order; None: positional

    def arguments(self, params: Params) -> list[Any]:
        if self.names is None:
            return list(params)  # positional: a sequence
        return [params[name] for name in self.names]  # type: ignore[call-overload]


@cache
def prepared(sql: str) -> Prepared:
    """`sql` (psycopg placeholders, `%s` or `%(name)s`) as a server-side statement."""
    names: list[str] = []
    positional = 0

    def number(match: re.Match[str]) -> str:
        nonlocal positional
        name, kind = match.groups()
        if kind == "%":
            return "%"
        if name is None:
            positional += 1
            return f"${positional}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PLACEHOLDER.sub(number, sql)
    if names and positional:
        raise ValueError("a statement takes positional or named parameters, not both")
    name = "shelfwise_" + hashlib.blake2b(sql.encode(), digest_size=8).hexdigest()
    count = len(names) or positional
    execute = f"EXECUTE {name}({', '.join(['%s'] * count)})" if count else f"EXECUTE {name}"
    return Prepared(
        name,
        f"PREPARE {name} AS {text}",
        execute,
        tuple(names) if names else None,
    )


def forget_prepared(conn: AsyncConnection[Any]) -> None:
    """The connection's prepared statements may have changed: ask the server next time."""
    _prepared.pop(conn, None)


_client_classes: dict[type[AsyncCursor[Any]], type[AsyncCursor[Any]]] = {}


def _client_cursor_class(base: type[AsyncCursor[Any]]) -> type[AsyncCursor[Any]]:
    """The connection's own cursor class (statement timing, tracing) binding client-side."""
    found = _client_classes.get(base)
    if found is None:
        found = _client_classes[base] = type(
            "Client" + base.__name__, (ClientCursorMixin, base), {}
        )
    return found


class Pending:
    """The rows of one queued statement, once its batch has been sent."""

    __slots__ = ("_batch", "_rows")

    def __init__(self, batch: Batch) -> None:
        self._batch = batch
        self._rows: list[TupleRow] | None = None

    async def fetchall(self) -> list[TupleRow]:
        if self._rows is None:
            await self._batch.send()
        assert self._rows is not None  # send() sets every queued statement's rows
        return self._rows

    async def fetchone(self) -> TupleRow | None:
        rows = await self.fetchall()
        return rows[0] if rows else None


@dataclass(frozen=True, slots=True)
class _Queued:
    sql: LiteralString
    params: Params | None
    pending: Pending


class Batch:
    """Statements queued on `conn`, sent together by `send()` (or the first read)."""

    def __init__(self, conn: AsyncConnection[Any], *, prepare: bool = False) -> None:
        """`prepare`: prepare statements on the server (only where nothing in between
        resets the session: not behind a transaction-pooling pgbouncer)."""
        self.conn = conn
        self._prepare = prepare
        self._queued: list[_Queued] = []

    def queue(self, sql: LiteralString, params: Params | None = None) -> Pending:
        """Queue `sql` with `params` (psycopg placeholders). Without `params` the text is
        sent as it is and never prepared: BEGIN, COMMIT."""
        pending = Pending(self)
        self._queued.append(_Queued(sql, params, pending))
        return pending

    async def send(self) -> None:
        """Send everything queued as one query and hand each statement its rows. Raises
        the first statement's error (the rest were skipped by the server)."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        cursor: AsyncCursor[TupleRow] = _client_cursor_class(self.conn.cursor_factory)(
            self.conn, row_factory=tuple_row
        )
        preparing = await self._to_prepare(queued)
        parts = [p.prepare for p in preparing]
        parts.append(self._bound(cursor, queued))
        try:
            # A str, not bytes: the tracing cursor's SQL commenter takes only text.
            await cursor.execute("; ".join(parts))
        except BaseException as exc:
            if preparing or isinstance(exc, InvalidSqlStatementName):
                forget_prepared(self.conn)  # prepared or not, the server knows
            raise
        for _ in preparing:
            cursor.nextset()
        for q in queued:
            returned = cursor.pgresult is not None and cursor.pgresult.status == TUPLES_OK
            q.pending._rows = await cursor.fetchall() if returned else []
            cursor.nextset()

    async def _to_prepare(self, queued: list[_Queued]) -> list[Prepared]:
        if not self._prepare:
            return []
        new = {p.name: p for q in queued if q.params is not None for p in [prepared(q.sql)]}
        if not new:
            return []
        known = _prepared.get(self.conn)
        if known is None:
            cursor = self.conn.cursor(row_factory=tuple_row)
            await cursor.execute(KNOWN_STATEMENTS)
            known = _prepared[self.conn] = {row[0] for row in await cursor.fetchall()}
        preparing = [p for name, p in new.items() if name not in known]
        known.update(p.name for p in preparing)
        return preparing

    def _bound(self, cursor: AsyncCursor[TupleRow], queued: list[_Queued]) -> str:
        """The queued statements as one text, values bound. Prepared, they are bound in
        one `mogrify` of all their `EXECUTE`s (one adaptation context for the batch, not
        one per statement: ~60 -> ~30 µs for an order's five; decision 0043). A
        `PREPARE`'s text never goes through `mogrify`: its `%` would be read as
        placeholders."""
        if not self._prepare:
            return "; ".join(self._plain(cursor, q) for q in queued)
        if all(q.params is None for q in queued):
            return "; ".join(q.sql for q in queued)  # BEGIN, COMMIT: sent as they are
        texts: list[str] = []
        arguments: list[Any] = []
        for q in queued:
            if q.params is None:
                texts.append(q.sql.replace("%", "%%"))  # mogrify reads %% back as %
            else:
                statement = prepared(q.sql)
                texts.append(statement.execute)
                arguments.extend(statement.arguments(q.params))
        return str(cursor.mogrify("; ".join(texts), arguments))  # type: ignore[attr-defined]

    @staticmethod
    def _plain(cursor: AsyncCursor[TupleRow], queued: _Queued) -> str:
        if queued.params is None:
            return queued.sql
        return str(cursor.mogrify(queued.sql, queued.params))  # type: ignore[attr-defined]


@asynccontextmanager
async def transaction(driver: DriverPool) -> AsyncIterator[Batch]:
    """A pooled connection inside BEGIN ... COMMIT, both sent with the statements around
    them: BEGIN with the first batch, COMMIT with the last. If the block raises, a
    statement fails or the task is cancelled, ROLLBACK (a round trip of its own)."""
    async with driver.connection() as conn:
        batch = Batch(conn, prepare=driver.prepares)
        batch.queue(BEGIN)
        try:
            yield batch
            batch.queue(COMMIT)
            await batch.send()
        except BaseException:
            await _roll_back(conn)
            raise


async def _roll_back(conn: AsyncConnection[Any]) -> None:
    # IDLE: BEGIN never left (or COMMIT failed, which ends the transaction). ACTIVE (a
    # cancel psycopg could not complete): the pool closes the connection.
    if conn.pgconn.transaction_status in (
        pq.TransactionStatus.INTRANS,
        pq.TransactionStatus.INERROR,
    ):
        forget_prepared(conn)  # psycopg may answer the ROLLBACK with DEALLOCATE ALL
        await conn.execute(ROLLBACK)
