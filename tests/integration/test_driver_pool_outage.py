"""A caller queued for a driver-pool connection when PostgreSQL goes away is answered
`DatabaseUnavailable` as soon as the breaker knows, not after the pool's timeout.

The pool's one connection is held, so the next caller must wait for a new one; the
server is then stopped (`pg_ctl stop -m immediate`, a server of the test's own). The
pool makes new connections in the background and retries them with back-off, so without
its failed connects reaching the breaker the caller waited the whole pool timeout and
got a `PoolTimeout` (the 5 s request `test_database_restart` caught once).
"""

from __future__ import annotations

import time

import pytest

from shelfwise.driverpool import DriverPool
from shelfwise.errors import DatabaseUnavailable
from tests.pg_support import disposable_postgres

POOL_TIMEOUT = 10.0  # what the caller waited before; the bound below is far under it


async def test_a_caller_waiting_for_a_connection_is_let_go_when_the_database_goes() -> None:
    with disposable_postgres() as pg:
        driver = DriverPool(pg.url("postgres"), max_size=2, timeout=POOL_TIMEOUT)
        await driver.open()
        try:
            async with driver.connection():  # the pool's only connection (min_size 1)
                pg.stop_immediately()
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable):
                    async with driver.connection():
                        pass
                waited = time.monotonic() - started
            assert waited < POOL_TIMEOUT / 3, f"waited {waited:.2f}s for a connection"
            assert driver.breaker.is_open
        finally:
            await driver.close()
