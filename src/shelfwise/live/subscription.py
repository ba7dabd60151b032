"""One client's view of the stream: a bounded, ordered queue the hub fills and the
transport drains.

The hub matches events per audience (`live/audience.py`) and, at each flush, offers every
member the same `Batch`; the transport then takes *everything* queued — one socket write
per wake-up instead of one per event. When that is exactly one fresh batch (the usual
case), the batch itself is handed over, so its frames are joined once for the whole
audience (`Hub.joined`). Positions make delivery exactly-once: an event at or below the
last position delivered is dropped.

A transport that can write without waiting (SSE, through the server's `BodyWriter`) sets
`direct`: a batch offered while its task waits with nothing queued is then written at
once, from the hub's flush, and the task is not woken at all. Anything else (a backlog,
batches still queued, a connection whose writes are paused) takes the queue, so the
order stays the queue's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from shelfwise.events.outbox import PublishedEvent
from shelfwise.identity.principal import Principal
from shelfwise.live.audience import Audience, Batch
from shelfwise.live.channels import ChannelSet, matches
from shelfwise.observability.metrics import LIVE_SLOW_DISCONNECTS

if TYPE_CHECKING:
    from shelfwise.live.credentials import Credential

log = structlog.get_logger("shelfwise.live")
# What `offer` did with a batch (falsy: nothing, the subscription is closed or too slow).
REFUSED, QUEUED, WRITTEN = 0, 1, 2


class Closed(Exception):
    """The subscription ended; `reason` says why (slow_consumer, draining, revoked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    def __init__(
        self,
        channels: ChannelSet,
        principal: Principal,
        transport: str,
        *,
        queue_limit: int,
        credential: Credential | None = None,
    ) -> None:
        self.channels = channels
        self.principal = principal
        self.transport = transport
        self.credential = credential  # re-checked by the hub while the connection lives
        self.position = 0  # last position delivered (or skipped as not ours)
        self.queue_limit = queue_limit
        self.backlog: deque[PublishedEvent] = deque()
        self._live: deque[Batch] = deque()
        self._offset = 0  # events of `_live[0]` already taken (long-poll takes one by one)
        self._queued = 0  # live events not taken yet
        self._rematch = False  # channels changed while batches were queued
        self.audience: Audience[Subscription] | None = None  # set by the hub
        self._wakeup = asyncio.Event()
        self._closed: str | None = None
        self._ping = False
        self.quiet_until = 0.0  # loop time after which a heartbeat is due
        # Writes a batch to the client now, or returns False (see the module docstring).
        self.direct: Callable[[Batch], bool] | None = None
        self._waiting = False  # the transport waits in `next_batch`, everything written

    # -- called by the hub ---------------------------------------------------------------
    def offer(self, batch: Batch) -> int:
        """Write a flush's batch at once (`WRITTEN`, see `direct`), or queue it and wake
        the transport (`QUEUED`). `REFUSED` when closed, or when the batch would take the
        queue past `queue_limit`: then the client is too slow and is disconnected (it
        resumes from its last position)."""
        if self._closed:
            return REFUSED
        # (Before a direct write too: a batch over the limit is not written either, so a
        # burst costs no connection a copy of it in its write buffer.)
        if self._queued + len(batch) > self.queue_limit:
            LIVE_SLOW_DISCONNECTS.labels(self.transport).inc()
            log.info("live_slow_consumer", transport=self.transport, queued=self._queued)
            self.close("slow_consumer")
            return REFUSED
        if (
            self._waiting
            and not self._live
            and self.direct is not None
            and batch[0].position > self.position
            and self.direct(batch)
        ):
            self.position = batch[-1].position
            return WRITTEN
        self._live.append(batch)
        self._queued += len(batch)
        self._wakeup.set()
        return QUEUED

    def ping(self) -> None:
        """Nothing was written for a heartbeat interval: let the transport send a ping."""
        self._ping = True
        self._wakeup.set()

    def close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            self._live.clear()
            self._queued = self._offset = 0
            self._wakeup.set()

    @property
    def closed_reason(self) -> str | None:
        return self._closed

    def change_channels(self, channels: ChannelSet) -> None:
        """Called by the hub, which also moves the subscription to its new audience;
        batches queued for the old channels are filtered on the way out."""
        self.channels = channels
        self._rematch = bool(self._live)

    # -- called by the transport ---------------------------------------------------------
    def take(self, limit: int | None = None) -> Sequence[PublishedEvent]:
        """What is queued and still for us, in order: the backlog first, then live events.
        One fresh batch alone is returned as it is (shared with its audience)."""
        if limit is None and not self.backlog and len(self._live) == 1:
            batch = self._live[0]
            if not self._rematch and not self._offset and batch[0].position > self.position:
                self._live.clear()
                self._queued = 0
                self.position = batch[-1].position
                return batch
        events: list[PublishedEvent] = []
        while self.backlog and (limit is None or len(events) < limit):
            self._accept(self.backlog.popleft(), events, rematch=True)
        while self._live and (limit is None or len(events) < limit):
            batch = self._live[0]
            event = batch[self._offset]
            self._offset += 1
            self._queued -= 1
            if self._offset == len(batch):
                self._live.popleft()
                self._offset = 0
            self._accept(event, events, rematch=self._rematch)
        if not self._live:
            self._rematch = False
        return events

    def _accept(self, event: PublishedEvent, into: list[PublishedEvent], *, rematch: bool) -> None:
        if event.position > self.position and (
            not rematch or matches(self.channels, event, self.principal)
        ):
            self.position = event.position
            into.append(event)

    async def next_batch(self) -> Sequence[PublishedEvent]:
        """Everything queued, as one batch, once the hub wakes us; an empty batch means a
        heartbeat is due. Raises `Closed` when the subscription ended."""
        while True:
            if self._closed:
                raise Closed(self._closed)
            events = self.take()
            if events:
                return events
            if self._ping:
                self._ping = False
                return events
            self._wakeup.clear()
            # Everything taken so far is written (the transport writes what this returns
            # before asking again): until woken, a batch may be written directly.
            self._waiting = True
            try:
                await self._wakeup.wait()
            finally:
                self._waiting = False

    async def next(self, wait_seconds: float) -> PublishedEvent | None:
        """The next event in order, or None when `wait_seconds` pass first (long-poll)."""
        while True:
            if self._closed:
                raise Closed(self._closed)
            events = self.take(1)
            if events:
                return events[0]
            self._ping = False
            self._wakeup.clear()
            try:
                async with asyncio.timeout(wait_seconds):
                    await self._wakeup.wait()
            except TimeoutError:
                return None

    def pending(self) -> int:
        return len(self.backlog) + self._queued
