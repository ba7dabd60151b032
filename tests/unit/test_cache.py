"""The read-through cache: hits, TTL, size bound, invalidation, single flight."""

from __future__ import annotations

import asyncio

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
