"""A bounded, in-process read-through cache with invalidation and stampede protection.

Used for public catalog reads, which are hot, identical for every caller, and change
rarely. Three mechanisms keep it honest:

- **Invalidation by events.** Every product change is an outbox event; each process's
  live hub sees every event (whichever instance made the change) and evicts the entries
  it affects. A change made in *this* process also evicts at once, so a client reads its
  own write.
- **A TTL as the safety net.** If an invalidation is ever missed (the hub's feed was down),
  an entry still dies after `ttl` seconds. This bounds staleness; it is not the mechanism.
- **Single flight.** When an entry is missing, the first request loads it and every
  concurrent request for the same key awaits that one load: a popular item expiring under
  load costs one query, not a thundering herd of them.
- **Refresh ahead, with jitter** (`refresh_after`, optional). Entries loaded together
  (a warm-up, a deploy, a burst) would otherwise all expire together, ttl seconds later:
  a wave of misses, each a query, queued behind the pool while every other request
  waits for the loop (the p99 590 ms / max 1.35 s of cached product reads, issue 14;
  docs/performance.md). With `refresh_after`, a hit on an entry past its own refresh
  point (drawn between `refresh_after` and the ttl) returns the cached value at once and
  reloads it in the background, one load per key and `refresh_limit` at a time (they use
  the same pool as requests); the hard expiry is jittered too (last tenth of the ttl), so
  what is not read in time does not expire in one instant either. Nothing older than
  `ttl` is ever served: the staleness bound is unchanged.

Values are the serialized response bytes: a hit costs neither a query nor a serialization.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from shelfwise.observability.metrics import CACHE_EVICTIONS, CACHE_REQUESTS

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    expires: float
    refresh_at: float  # past this, a hit reloads in the background (inf: never)


class ReadThroughCache(Generic[K, V]):
    def __init__(
        self,
        name: str,
        *,
        max_entries: int,
        ttl: float,
        refresh_after: float | None = None,
        refresh_limit: int = 2,
        now: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._max = max_entries
        self._ttl = ttl
        self._refresh_after = refresh_after
        # Background reloads share the pool with requests: a few at a time, or they
        # become the queue they were meant to remove. A hit that finds them all busy
        # serves the entry as is; a later hit refreshes it (or it expires: a miss).
        self._refresh_limit = refresh_limit
        self._now = now
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._refreshing: set[asyncio.Task[V | None]] = set()  # strong refs while running
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V | None]] = {}
        # Bumped by invalidate_all; a load that started before it must not be stored.
        self._generation = 0
        # Keys invalidated while their load was in flight: that load read the old value.
        self._stale: set[K] = set()
        # Bound once: `labels()` per hit (a lock and a dict look-up) was a measurable
        # share of a cached product read (docs/performance.md, issue 14).
        self._hits = CACHE_REQUESTS.labels(name, "hit")
        self._misses = CACHE_REQUESTS.labels(name, "miss")
        self._coalesced = CACHE_REQUESTS.labels(name, "coalesced")
        self._refreshes = CACHE_REQUESTS.labels(name, "refresh")

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires <= self._now():
            return None
        return entry.value

    async def get(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        """The cached value, or the result of `load()` (stored unless it is None)."""
        entry = self._entries.get(key)
        now = self._now()
        if entry is not None and entry.expires > now:
            self._entries.move_to_end(key)
            self._hits.inc()
            if (
                entry.refresh_at <= now
                and key not in self._loading
                and len(self._refreshing) < self._refresh_limit
            ):
                self._refresh(key, load)
            return entry.value
        if (pending := self._loading.get(key)) is not None:
            self._coalesced.inc()
            return await asyncio.shield(pending)
        self._misses.inc()
        return await self._load(key, load)

    def _refresh(self, key: K, load: Callable[[], Awaitable[V | None]]) -> None:
        """Reload `key` off the request's path; a failure keeps the entry until it expires."""
        self._refreshes.inc()
        task = asyncio.get_running_loop().create_task(self._load(key, load))
        self._refreshing.add(task)
        task.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Task[V | None]) -> None:
        self._refreshing.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: nobody awaits a background refresh

    async def _load(self, key: K, load: Callable[[], Awaitable[V | None]]) -> V | None:
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._loading[key] = future
        generation = self._generation
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it as lost
            raise
        finally:
            self._loading.pop(key, None)
        future.set_result(value)
        if value is not None and generation == self._generation and key not in self._stale:
            self._store(key, value)
        self._stale.discard(key)
        return value

    def _store(self, key: K, value: V) -> None:
        now, ttl = self._now(), self._ttl
        if self._refresh_after is None:
            self._entries[key] = _Entry(value, now + ttl, float("inf"))
        else:
            # Spread both points over a window, so entries stored together part ways.
            refresh_at = now + self._rng.uniform(self._refresh_after, 0.9 * ttl)
            self._entries[key] = _Entry(value, now + self._rng.uniform(0.9 * ttl, ttl), refresh_at)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
            CACHE_EVICTIONS.labels(self.name, "size").inc()

    def invalidate(self, key: K) -> None:
        if self._entries.pop(key, None) is not None:
            CACHE_EVICTIONS.labels(self.name, "invalidated").inc()
        if key in self._loading:
            self._stale.add(key)  # a load in flight read the old value: do not keep it

    def invalidate_all(self) -> None:
        if self._entries:
            CACHE_EVICTIONS.labels(self.name, "invalidated").inc(len(self._entries))
        self._entries.clear()
        self._generation += 1
