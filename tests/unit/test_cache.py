"""The read-through cache: hits, TTL, size bound, invalidation, single flight."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import REGISTRY

from shelfwise.cache import ReadThroughCache
from tests.support import wait_until


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(**kwargs: float) -> tuple[ReadThroughCache[str, str], Clock]:
    clock = Clock()
    options = {"max_entries": 3, "ttl": 10.0, **kwargs}
    return ReadThroughCache("test", now=clock, **options), clock  # type: ignore[arg-type]


async def test_hit_after_miss_and_ttl_expiry() -> None:
    cache, clock = make()
    loads: list[str] = []

    async def load() -> str:
        loads.append("x")
        return f"v{len(loads)}"

    assert await cache.get("k", load) == "v1"
    assert await cache.get("k", load) == "v1"
    clock.t = 10.0
    assert await cache.get("k", load) == "v2"
    assert len(loads) == 2


async def test_size_bound_evicts_least_recently_used() -> None:
    cache, _ = make()
    for key in "abc":
        await cache.get(key, lambda k=key: _value(k))
    await cache.get("a", lambda: _value("a"))  # a is now most recent
    await cache.get("d", lambda: _value("d"))
    assert cache.peek("b") is None
    assert cache.peek("a") == "a"
    assert len(cache) == 3


async def _value(key: str) -> str:
    return key


async def test_concurrent_misses_load_once() -> None:
    cache, _ = make()
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "value"

    tasks = [asyncio.create_task(cache.get("k", slow)) for _ in range(20)]
    await started.wait()
    release.set()
    assert await asyncio.gather(*tasks) == ["value"] * 20
    assert calls == 1


async def test_invalidation_during_a_load_discards_that_load() -> None:
    cache, _ = make()
    started, release = asyncio.Event(), asyncio.Event()

    async def old_value() -> str:
        started.set()
        await release.wait()
        return "old"

    task = asyncio.create_task(cache.get("k", old_value))
    await started.wait()
    cache.invalidate("k")  # the row changed while it was being read
    release.set()
    assert await task == "old"  # that caller saw the read it made...
    assert cache.peek("k") is None  # ...but nobody else will


async def test_invalidate_all_during_a_load_discards_it_too() -> None:
    cache, _ = make()
    started, release = asyncio.Event(), asyncio.Event()

    async def old_value() -> str:
        started.set()
        await release.wait()
        return "old"

    task = asyncio.create_task(cache.get("k", old_value))
    await started.wait()
    cache.invalidate_all()
    release.set()
    await task
    assert cache.peek("k") is None


def coalesced() -> float:
    value = REGISTRY.get_sample_value(
        "shelfwise_cache_requests_total", {"cache": "test", "result": "coalesced"}
    )
    return value or 0.0


async def test_failed_load_is_not_cached_and_waiters_see_the_error() -> None:
    cache, _ = make()
    started, release = asyncio.Event(), asyncio.Event()

    async def broken() -> str:
        started.set()
        await release.wait()
        raise LookupError("gone")

    first = asyncio.create_task(cache.get("k", broken))
    await started.wait()
    before = coalesced()
    second = asyncio.create_task(cache.get("k", broken))

    async def joined() -> bool:
        return coalesced() == before + 1

    await wait_until(joined, interval=0.001, what="the second caller to join the load")
    release.set()
    for task in (first, second):
        with pytest.raises(LookupError):
            await task
    assert await cache.get("k", lambda: _value("fresh")) == "fresh"


# -- refresh ahead with jitter (issue 14's read tail) ------------------------------------


def make_refreshing() -> tuple[ReadThroughCache[str, str], Clock]:
    clock = Clock()
    cache: ReadThroughCache[str, str] = ReadThroughCache(
        "test", max_entries=100, ttl=10.0, refresh_after=5.0, now=clock, rng=random.Random(7)
    )
    return cache, clock


async def test_entries_stored_together_expire_and_refresh_at_different_times() -> None:
    cache, _ = make_refreshing()
    for n in range(50):
        await cache.get(str(n), lambda n=n: _value(str(n)))
    entries = list(cache._entries.values())
    expiries = {e.expires for e in entries}
    refreshes = {e.refresh_at for e in entries}
    assert len(expiries) == 50
    assert len(refreshes) == 50
    assert all(9.0 <= e.expires <= 10.0 for e in entries)  # never served past the ttl
    assert all(5.0 <= e.refresh_at <= 9.0 < e.expires for e in entries)


async def test_a_hit_past_its_refresh_point_answers_at_once_and_reloads_in_background() -> None:
    cache, clock = make_refreshing()
    assert await cache.get("k", lambda: _value("v1")) == "v1"
    entry = cache._entries["k"]
    clock.t = entry.refresh_at
    started, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def reload() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "v2"

    # The caller does not wait for the reload; nor do the ones after it, nor start another.
    assert await cache.get("k", reload) == "v1"
    await started.wait()
    assert await cache.get("k", reload) == "v1"
    release.set()

    async def refreshed() -> bool:
        return cache.peek("k") == "v2"

    await wait_until(refreshed, interval=0.001, what="the background reload to be stored")
    assert calls == 1
    assert cache._entries["k"].expires > entry.expires  # a new lease from the reload's time


async def test_a_failed_background_reload_keeps_the_entry_until_it_expires() -> None:
    cache, clock = make_refreshing()
    await cache.get("k", lambda: _value("v1"))
    entry = cache._entries["k"]
    clock.t = entry.refresh_at
    failed = asyncio.Event()

    async def broken() -> str:
        failed.set()
        raise LookupError("database away")

    assert await cache.get("k", broken) == "v1"
    await failed.wait()
    await asyncio.sleep(0)  # the task's done callback retrieves the error
    assert not cache._refreshing
    assert cache.peek("k") == "v1"
    clock.t = entry.expires
    assert cache.peek("k") is None  # the staleness bound holds: a miss now loads


async def test_invalidation_during_a_background_reload_discards_it() -> None:
    cache, clock = make_refreshing()
    await cache.get("k", lambda: _value("old"))
    clock.t = cache._entries["k"].refresh_at
    started, release = asyncio.Event(), asyncio.Event()

    async def old_value() -> str:
        started.set()
        await release.wait()
        return "old, read before the change"

    await cache.get("k", old_value)
    await started.wait()
    cache.invalidate("k")  # the product changed while the reload read it
    release.set()

    async def finished() -> bool:
        return not cache._refreshing

    await wait_until(finished, interval=0.001, what="the reload to finish")
    assert cache.peek("k") is None


async def test_background_reloads_are_bounded_and_a_busy_hit_serves_the_entry() -> None:
    clock = Clock()
    cache: ReadThroughCache[str, str] = ReadThroughCache(
        "test", max_entries=100, ttl=10.0, refresh_after=5.0, refresh_limit=2, now=clock
    )
    for key in "abc":
        await cache.get(key, lambda k=key: _value(k))
    clock.t = 9.0  # past every refresh point, before every expiry
    release = asyncio.Event()
    calls: list[str] = []

    def reload(key: str) -> Callable[[], Awaitable[str]]:
        async def run() -> str:
            calls.append(key)
            await release.wait()
            return key + "2"

        return run

    assert [await cache.get(k, reload(k)) for k in "abc"] == ["a", "b", "c"]
    await asyncio.sleep(0)
    assert calls == ["a", "b"]  # the third hit found both reload slots busy
    release.set()

    async def settled() -> bool:
        return not cache._refreshing

    await wait_until(settled, interval=0.001, what="the reloads to finish")
    assert (cache.peek("a"), cache.peek("b"), cache.peek("c")) == ("a2", "b2", "c")
