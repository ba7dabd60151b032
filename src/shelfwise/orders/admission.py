"""Hot-row admission: a flash sale waits on a gate in this process, not on the pool.

Every order for one stock level serialises on that level's row lock in PostgreSQL. Two
thousand buyers of one product at one location therefore gain nothing by each holding a
pool connection while they queue for the lock: they starve everyone else of the pool,
and after the pool's checkout timeout they are shed with 503. So one-line orders that
name a location pass a per-(product, location) gate first (`HotLevelGate.admit`): at
most `holders` of them at a time hold a connection for that level; the rest wait here.

Once a placement learns the level has nothing left (the database refused it with
`available: 0`, or a `stock.changed` event says so), the gate answers every waiter and
newcomer with the same 409 `insufficient_stock` the database path gives, without a
connection per request. "Sold out" never outlives reality for long:

- a `stock.changed` event with units available and a newer `level_version` than the one
  that sold out (a restock, a cancellation, an expiry, a transfer in) clears it as soon
  as the live hub delivers it (`Hub.listeners`, as the catalog cache's evictions);
- it expires after `sold_out_ttl` (1 s) in any case: the safety net when no event comes
  (no relay running, the hub's feed lost) or it cannot be ordered against the refusal.

The staleness window is therefore min(event delivery lag, `sold_out_ttl`) from the
moment stock came back (docs/decisions/0033-hot-row-admission.md).

Idempotent retries keep their stored response: before answering "sold out", the
request's key is looked up (`StoredKeys`, one statement for every request that is
being answered at that moment, not one connection each). A key with a stored response,
or one still running under this gate, takes the normal path (replay, 422 or 409
in-progress); a key without one was never answered with anything but a refusal, which
stores nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from shelfwise.driverpool import DriverPool, fetch_rows
from shelfwise.errors import InsufficientStock
from shelfwise.events.outbox import PublishedEvent
from shelfwise.events.types import EventType
from shelfwise.idempotency.service import IdempotentRequest
from shelfwise.observability.metrics import ADMISSION_ANSWERS, ADMISSION_WAITING

LevelKey = tuple[uuid.UUID, uuid.UUID]  # (product_id, location_id)
SOLD_OUT_DETAIL = "No single location has enough unreserved stock for every line"

# Which of the given (principal, key) pairs have a stored response. One statement for a
# whole batch; the primary key (principal, key) answers each pair.
STORED_KEYS = """\
SELECT k.principal, k.key
  FROM idempotency_keys AS k
  JOIN unnest(%(principals)s::text[], %(keys)s::text[]) AS wanted(principal, key)
    ON k.principal = wanted.principal AND k.key = wanted.key
"""


class StoredKeys:
    """Single-flight, batched look-up of idempotency records: requests that ask while a
    look-up runs are answered together by the next one."""

    def __init__(self, driver: DriverPool, *, batch: int = 1000) -> None:
        self._driver = driver
        self._batch = batch
        self._pending: list[tuple[str, str, asyncio.Future[bool]]] = []
        self._running: asyncio.Task[None] | None = None

    async def stored(self, principal: str, key: str) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((principal, key, future))
        if self._running is None:
            self._running = asyncio.create_task(self._look_up(), name="admission-stored-keys")
        return await future

    async def _look_up(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._batch], self._pending[self._batch :]
                wanted = [(p, k, f) for p, k, f in batch if not f.done()]  # skip the gone
                if not wanted:
                    continue
                try:
                    async with self._driver.connection() as conn:
                        rows = await fetch_rows(
                            conn,
                            STORED_KEYS,
                            {
                                "principals": [p for p, _, _ in wanted],
                                "keys": [k for _, k, _ in wanted],
                            },
                        )
                except Exception as exc:  # each waiter gets the failure (503 at the edge)
                    for _, _, future in wanted:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                found = {(str(p), str(k)) for p, k in rows}
                for principal, key, future in wanted:
                    if not future.done():
                        future.set_result((principal, key) in found)
        finally:
            self._running = None


@dataclass(slots=True)
class _Level:
    """One stock level's gate: who holds a slot, who waits, and what is known of it."""

    holders: int = 0
    waiters: deque[asyncio.Future[bool]] = field(default_factory=deque)
    sold_out_until: float = float("-inf")
    # The level_version at which it was seen sold out; None while unknown (learned from a
    # refusal before the event that emptied it was delivered).
    sold_out_version: int | None = None
    seen_version: int | None = None  # newest `stock.changed` delivered for this level
    seen_available: int | None = None


def hot_level(
    quantities: Mapping[uuid.UUID, int], location_id: uuid.UUID | None
) -> LevelKey | None:
    """The level a placement contends for, when it is exactly one: a one-line order at a
    named location. Multi-line orders and orders without a location take the normal path."""
    if location_id is None or len(quantities) != 1:
        return None
    (product_id,) = quantities
    return (product_id, location_id)


def sold_out(product_id: uuid.UUID, requested: int) -> InsufficientStock:
    """The refusal the database path gives for a level with nothing available."""
    return InsufficientStock(
        SOLD_OUT_DETAIL,
        lines=[{"product_id": str(product_id), "requested": requested, "available": 0}],
    )


class HotLevelGate:
    """Per-(product, location) admission for one-line orders at a location (module doc)."""

    def __init__(
        self,
        keys: StoredKeys | None,
        *,
        holders: int = 4,
        sold_out_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self.holders = holders
        self.sold_out_ttl = sold_out_ttl
        self.clock = clock
        self._levels: dict[LevelKey, _Level] = {}
        self._running_keys: set[tuple[str, str]] = set()

    def is_sold_out(self, key: LevelKey) -> bool:
        level = self._levels.get(key)
        return level is not None and level.sold_out_until > self.clock()

    @asynccontextmanager
    async def admit(
        self,
        quantities: Mapping[uuid.UUID, int],
        location_id: uuid.UUID | None,
        idempotency: IdempotentRequest[Any] | None,
    ) -> AsyncIterator[None]:
        """Run the placement inside this block. Raises `InsufficientStock` at once when the
        level is known sold out; otherwise waits for a slot. Learns from the block's own
        refusal."""
        key = hot_level(quantities, location_id)
        if key is None:
            yield
            return
        level = self._levels.setdefault(key, _Level())
        try:
            if not await self._enter(level):
                if await self._must_take_normal_path(idempotency):
                    ADMISSION_ANSWERS.labels("stored_key").inc()
                    yield  # a replay, 422 or in-progress: no stock row touched, no slot
                    return
                ADMISSION_ANSWERS.labels("sold_out").inc()
                raise sold_out(key[0], quantities[key[0]])
            ADMISSION_ANSWERS.labels("admitted").inc()
            running = (idempotency.principal, idempotency.key) if idempotency else None
            if running is not None:
                self._running_keys.add(running)
            try:
                yield
            except InsufficientStock as refusal:
                self._learn(key[0], level, refusal)
                raise
            finally:
                if running is not None:
                    self._running_keys.discard(running)
                self._leave(level)
        finally:
            if level.holders == 0 and not level.waiters and level.sold_out_until <= self.clock():
                self._levels.pop(key, None)

    async def _must_take_normal_path(self, idempotency: IdempotentRequest[Any] | None) -> bool:
        if idempotency is None or self.keys is None:
            return False
        if (idempotency.principal, idempotency.key) in self._running_keys:
            return True
        return await self.keys.stored(idempotency.principal, idempotency.key)

    async def _enter(self, level: _Level) -> bool:
        """True with a slot held; False when the level is (or became) sold out."""
        while True:
            if level.sold_out_until > self.clock():
                return False
            if level.holders < self.holders and not level.waiters:
                level.holders += 1
                return True
            waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            level.waiters.append(waiter)
            ADMISSION_WAITING.inc()
            try:
                granted = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result():
                    self._leave(level)  # handed a slot just as it gave up: pass it on
                elif waiter in level.waiters:
                    level.waiters.remove(waiter)
                raise
            finally:
                ADMISSION_WAITING.dec()
            if granted:
                return True  # the slot was handed over by `_leave`

    def _leave(self, level: _Level) -> None:
        """Hand the slot to the longest waiter, or give it back."""
        while level.waiters:
            waiter = level.waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        level.holders -= 1

    def _mark_sold_out(self, level: _Level, version: int | None) -> None:
        level.sold_out_until = self.clock() + self.sold_out_ttl
        level.sold_out_version = version
        while level.waiters:  # every waiter is answered now, without a connection
            waiter = level.waiters.popleft()
            if not waiter.done():
                waiter.set_result(False)

    def _learn(self, product_id: uuid.UUID, level: _Level, refusal: InsufficientStock) -> None:
        lines = refusal.extra.get("lines") or []
        empty = any(
            line.get("product_id") == str(product_id) and int(line.get("available", 1)) <= 0
            for line in lines
        )
        if not empty:
            return  # asked for more than is left, but something is left
        # The refusal read committed state; its version is the last one delivered, if that
        # delivery already said "empty" (else the emptying event is still on its way).
        known = level.seen_version if (level.seen_available or 0) <= 0 else None
        self._mark_sold_out(level, known)

    def on_event(self, event: PublishedEvent) -> None:
        """Hub listener: follow the counters of levels this gate is serving."""
        if event.type != EventType.STOCK_CHANGED.value:
            return
        payload = event.payload
        try:
            key = (uuid.UUID(str(payload["product_id"])), uuid.UUID(str(payload["location_id"])))
            version, available = int(payload["level_version"]), int(payload["available"])
        except (KeyError, TypeError, ValueError):
            return
        level = self._levels.get(key)
        if level is None:
            return
        if level.seen_version is not None and version <= level.seen_version:
            return  # delivered twice, or older than what is known
        level.seen_version, level.seen_available = version, available
        sold_out_now = level.sold_out_until > self.clock()
        if available > 0:
            # Only a change newer than the emptying one is news; with that version
            # unknown the event may predate the refusal, and the TTL decides.
            known = level.sold_out_version
            if sold_out_now and known is not None and version > known:
                level.sold_out_until = float("-inf")
        elif not sold_out_now:
            self._mark_sold_out(level, version)  # emptied by a placement: no refusal needed
        elif level.sold_out_version is None:
            level.sold_out_version = version
