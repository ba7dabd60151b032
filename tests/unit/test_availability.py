"""What counts as "the database is unreachable", and the breaker's states, without a server.

The breaker probes a port nothing listens on (connection refused at once), so it opens;
`reachable` is then replaced by a fake to close it — no sleeps, polled with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import psycopg
import pytest
from psycopg import errors as pg_errors
from sqlalchemy.exc import OperationalError as SAOperationalError

from shelfwise.availability import DatabaseBreaker, is_connection_failure
from shelfwise.errors import DatabaseUnavailable
from tests.redis_support import free_port
from tests.support import wait_until


def test_connection_failures_are_told_apart_from_statement_failures() -> None:
    refused = psycopg.OperationalError("connection failed: Connection refused")
    assert is_connection_failure(refused)  # client side: no SQLSTATE
    assert is_connection_failure(pg_errors.AdminShutdown())  # 57P01
    assert is_connection_failure(pg_errors.CannotConnectNow())  # 57P03: starting up
    assert is_connection_failure(pg_errors.ProtocolViolation())  # 08P01 (pgbouncer's)
    assert is_connection_failure(SAOperationalError("SELECT 1", {}, refused))
    # A statement that failed says nothing about reachability.
    assert not is_connection_failure(pg_errors.QueryCanceled())  # statement_timeout
    assert not is_connection_failure(pg_errors.DeadlockDetected())
    assert not is_connection_failure(pg_errors.SerializationFailure())
    assert not is_connection_failure(pg_errors.UniqueViolation())
    assert not is_connection_failure(ValueError("not a database error"))


async def test_the_breaker_opens_when_the_probe_fails_and_closes_when_it_connects() -> None:
    breaker = DatabaseBreaker(
        f"postgresql://nobody@127.0.0.1:{free_port()}/none", probe_interval=0.05, retry_after=3
    )
    try:
        breaker.check()  # closed: nothing refused
        error = breaker.failed(psycopg.OperationalError("server closed the connection"), "test")
        assert isinstance(error, DatabaseUnavailable)
        assert error.headers == {"Retry-After": "3"}

        async def opened() -> bool:
            return breaker.is_open

        await wait_until(opened, timeout=10, what="the breaker to open")
        with pytest.raises(DatabaseUnavailable):
            breaker.check()  # refused at once while open

        async def answers() -> bool:
            return True

        breaker.reachable = answers  # type: ignore[method-assign]  # the database is back

        async def closed() -> bool:
            return not breaker.is_open

        await wait_until(closed, timeout=10, what="the breaker to close")
        breaker.check()
    finally:
        await breaker.close()


async def test_one_failed_connection_the_probe_disproves_does_not_open_it() -> None:
    breaker = DatabaseBreaker("postgresql://unused", probe_interval=0.05)
    probes = 0

    async def answers() -> bool:
        nonlocal probes
        probes += 1
        return True

    breaker.reachable = answers  # type: ignore[method-assign]
    try:
        breaker.failed(psycopg.OperationalError("terminating connection"), "test")

        async def probed() -> bool:
            return probes >= 1

        await wait_until(probed, timeout=10, what="the probe")
        assert not breaker.is_open
        breaker.check()
    finally:
        await breaker.close()


async def test_a_probe_that_gets_no_answer_is_a_no_within_its_timeout() -> None:
    # A server that accepts the connection and never says a word: what a probe sees
    # through pgbouncer while PostgreSQL is gone (its query queued, never answered).
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # until the probe hangs up (or the test closes it below)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    breaker = DatabaseBreaker(
        f"postgresql://nobody@127.0.0.1:{port}/none", connect_timeout=10, probe_timeout=0.3
    )
    try:
        started = time.monotonic()
        assert await breaker.reachable() is False
        assert time.monotonic() - started < 2.0  # the verdict, not libpq's 10 s connect
    finally:
        await breaker.close()
        server.close()
        # 3.11's wait_closed does not close accepted connections: a socket left to the
        # garbage collector fails a later, unrelated test with a ResourceWarning.
        for writer in accepted:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await server.wait_closed()
