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

Values are the serialized response bytes: a hit costs neither a query nor a serialization.
"""

from __future__ import annotations

import asyncio
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


class ReadThroughCache(Generic[K, V]):
    def __init__(
        self, name: str, *, max_entries: int, ttl: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self._max = max_entries
        self._ttl = ttl
        self._now = now
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._loading: dict[K, asyncio.Future[V | None]] = {}
        # Bumped by invalidate_all; a load that started before it must not be stored.
        self._generation = 0
        # Keys invalidated while their load was in flight: that load read the old value.
        self._stale: set[K] = set()

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
        if entry is not None and entry.expires > self._now():
            self._entries.move_to_end(key)
            CACHE_REQUESTS.labels(self.name, "hit").inc()
            return entry.value
        if (pending := self._loading.get(key)) is not None:
            CACHE_REQUESTS.labels(self.name, "coalesced").inc()
            return await asyncio.shield(pending)
        CACHE_REQUESTS.labels(self.name, "miss").inc()
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
        self._entries[key] = _Entry(value, self._now() + self._ttl)
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
