"""`limits`' in-memory storage, with an expiry pass that does not cost every request.

The rate limits keep their counts in this process when `REDIS_URL` is unset, and while
Redis is down (they fail open to memory: `ratelimit.py`). limits 5.8's `MemoryStorage`
then prunes expired moving-window entries in a background pass that visits every key
and hops to a worker thread once per key (`asyncio.to_thread` of one `bisect`), and
every hit starts the next pass as soon as the last one has ended. With 10,000 client
addresses that is ~100 µs of CPU per request and twice the p99 of cached reads
(`make bench`, docs/performance.md).

Pruning is memory hygiene only: a moving window is read by bisecting its entries by
time on every test and hit, so an expired entry left in place changes no answer. The
pass here waits `SWEEP_INTERVAL_S` after the hit that starts it, then prunes on the
event loop itself, `SWEEP_CHUNK` keys at a time with a yield between chunks. No lock is
needed: limits' own writers hold a key's lock with no `await` inside, and a chunk runs
between two `await`s, so neither can interleave with the other.

It replaces limits' private `_MemoryStorage__expire_events`, the coroutine that
`MemoryStorage`'s own scheduler starts.
`tests/unit/test_ratelimit_memory.py` fails if limits renames it.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from typing import Final

from limits.aio.storage import MemoryStorage

SWEEP_INTERVAL_S: Final = 1.0
SWEEP_CHUNK: Final = 1_000


class SweptMemoryStorage(MemoryStorage):
    async def _MemoryStorage__expire_events(self) -> None:  # noqa: N802 (limits' mangled name)
        """The pass limits' `__schedule_expiry` starts; one at a time, as before."""
        try:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            keys = list(self.events)
            for start in range(0, len(keys), SWEEP_CHUNK):
                self.prune_events(keys[start : start + SWEEP_CHUNK], time.time())
                await asyncio.sleep(0)
            self.prune_counters(time.time())
        except asyncio.CancelledError:
            return

    def prune_events(self, keys: list[str], now: float) -> None:
        """Drop the moving-window entries of `keys` that expired by `now`, and a key
        left with none. Entries are newest first, so the expired ones are a tail."""
        for key in keys:
            entries = self.events.get(key)
            if entries is None:
                continue
            live = bisect.bisect_left(entries, -now, key=lambda entry: -entry.expiry)
            if live:
                del entries[live:]
            else:
                self.events.pop(key, None)
                self.locks.pop(key, None)

    def prune_counters(self, now: float) -> None:
        """Drop the fixed and sliding window counters that expired by `now`."""
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)
