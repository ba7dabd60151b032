"""argon2id password hashing, off the event loop.

Hashing is deliberately slow (~20-50 ms and 19 MiB per call). Run on the loop it would
stall every other request for that long, so it runs in a small dedicated thread pool:
argon2-cffi releases the GIL inside the C code, so threads really run in parallel, and a
bounded pool caps the memory a login flood can claim.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib.resources import files
from typing import Any, TypeVar

from argon2 import PasswordHasher as Argon2
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from shelfwise.errors import Unavailable
from shelfwise.observability.metrics import PASSWORD_HASH_SECONDS

T = TypeVar("T")
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 128


@cache
def common_passwords() -> frozenset[str]:
    """Known-breached/common passwords shipped with the project (ASVS 2.1.7)."""
    text = files("shelfwise.identity").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


class PasswordHashingBusy(Unavailable):
    code = "sign_in_busy"
    title = "Too many sign-ins at once"


def is_common_password(password: str) -> bool:
    return password.lower() in common_passwords()


class PasswordHasher:
    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._argon2 = Argon2(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # One core is left to the event loop: a login burst must slow logins down, not
        # every other request (measured: with a thread per core, 20 logins/s pushed
        # product reads' p99 from 14 ms to seconds on this 2-core machine).
        threads = max(1, (os.cpu_count() or 2) - 1)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="argon2")
        # Bounded queue: beyond this many hashes waiting or running, shed load (503)
        # instead of queueing logins for seconds.
        self._max_in_flight = threads * 8
        self._in_flight = 0
        # Verified against when the account does not exist, so an unknown email costs
        # the same time as a wrong password (no user enumeration by timing).
        self._dummy_hash = self._argon2.hash("shelfwise-timing-equaliser")

    def _timed_hash(self, password: str) -> str:
        started = time.perf_counter()
        try:
            return self._argon2.hash(password)
        finally:
            PASSWORD_HASH_SECONDS.labels("hash").observe(time.perf_counter() - started)

    def _timed_verify(self, stored: str, password: str) -> bool:
        started = time.perf_counter()
        try:
            return self._argon2.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        finally:
            PASSWORD_HASH_SECONDS.labels("verify").observe(time.perf_counter() - started)

    def _admit(self) -> None:
        if self._in_flight >= self._max_in_flight:
            raise PasswordHashingBusy(
                "Too many sign-ins at once; retry shortly", headers={"Retry-After": "1"}
            )

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._admit()
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._in_flight -= 1

    async def hash(self, password: str) -> str:
        return await self._run(self._timed_hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        target = stored if stored is not None else self._dummy_hash
        ok = await self._run(self._timed_verify, target, password)
        return ok and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        return self._argon2.check_needs_rehash(stored)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
