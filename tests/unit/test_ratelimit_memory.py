"""The in-memory rate-limit storage's expiry pass (http/ratelimit_memory.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.storage.memory import Entry
from limits.aio.strategies import MovingWindowRateLimiter

from shelfwise.http import ratelimit_memory
from shelfwise.http.ratelimit_memory import SweptMemoryStorage


def entry(expires_at: float) -> Entry:
    made = Entry(60)
    made.atime, made.expiry = expires_at - 60, expires_at
    return made


def test_the_pass_it_replaces_is_still_limits_own() -> None:
    # limits' scheduler starts `self.__expire_events()`: if limits renames it, the
    # override below would silently stop replacing the thread-per-key pass.
    assert "_MemoryStorage__expire_events" in vars(MemoryStorage)
    assert "_MemoryStorage__schedule_expiry" in vars(MemoryStorage)
    assert "_MemoryStorage__expire_events" in vars(SweptMemoryStorage)


async def test_expired_entries_go_and_live_ones_stay() -> None:
    storage = SweptMemoryStorage()
    now = 1_000.0
    # Newest first, as `acquire_entry` prepends.
    storage.events["mixed"] = [entry(now + 5), entry(now + 1), entry(now - 1), entry(now - 9)]
    storage.events["stale"] = [entry(now - 1), entry(now - 2)]
    storage.events["fresh"] = [entry(now + 30)]
    storage.locks["stale"] = asyncio.Lock()

    storage.prune_events(["mixed", "stale", "fresh", "gone"], now)

    assert [e.expiry for e in storage.events["mixed"]] == [now + 5, now + 1]
    assert "stale" not in storage.events
    assert "stale" not in storage.locks
    assert [e.expiry for e in storage.events["fresh"]] == [now + 30]


async def test_expired_counters_go() -> None:
    storage = SweptMemoryStorage()
    storage.storage.update({"old": 3, "new": 2})
    storage.expirations.update({"old": 99.0, "new": 101.0})

    storage.prune_counters(100.0)

    assert dict(storage.storage) == {"new": 2}
    assert storage.expirations == {"new": 101.0}


async def test_the_pass_prunes_without_a_thread_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_threads(*args: object, **kwargs: object) -> None:
        raise AssertionError("the expiry pass hopped to a thread")

    monkeypatch.setattr(asyncio, "to_thread", no_threads)
    monkeypatch.setattr(ratelimit_memory, "SWEEP_INTERVAL_S", 0.0)
    monkeypatch.setattr(ratelimit_memory, "SWEEP_CHUNK", 2)  # several chunks, yields between
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = parse("5/minute")
    for n in range(5):
        assert await limiter.hit(item, "policy", f"client-{n}")
    past = time.time() - 1
    for n in range(5):
        storage.events[f"expired-{n}"] = [entry(past)]

    await storage._MemoryStorage__expire_events()

    assert len(storage.events) == 5  # the hits' keys (limits namespaces them)
    assert all("client-" in key for key in storage.events)


async def test_a_moving_window_answers_the_same() -> None:
    """The limiter's answers come from bisecting entries by time, not from the pass."""
    storage = SweptMemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3/minute")
    answers = [await limiter.hit(item, "policy", "peer") for _ in range(4)]
    assert answers == [True, True, True, False]
    stats = await limiter.get_window_stats(item, "policy", "peer")
    assert stats.remaining == 0
