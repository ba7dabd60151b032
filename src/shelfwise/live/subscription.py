"""One client's view of the stream: a bounded, ordered queue the hub fills and the
transport drains.

The hub queues matching events without waking anyone; it wakes every subscription that
got something once per flush (see `Hub`), and the transport then takes *everything*
queued as one batch — one socket write per wake-up instead of one per event. Positions
make delivery exactly-once: an event at or below the last position delivered is dropped.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import structlog

from shelfwise.events.outbox import PublishedEvent
from shelfwise.identity.principal import Principal
from shelfwise.live.channels import ChannelSet, matches
from shelfwise.observability.metrics import LIVE_SLOW_DISCONNECTS

if TYPE_CHECKING:
    from shelfwise.live.credentials import Credential

log = structlog.get_logger("shelfwise.live")


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
        self._live: deque[PublishedEvent] = deque()
        self._wakeup = asyncio.Event()
        self._closed: str | None = None
        self._ping = False
        self.flagged = False  # queued for the hub's next flush
        self.quiet_until = 0.0  # loop time after which a heartbeat is due

    # -- called by the hub ---------------------------------------------------------------
    def offer(self, event: PublishedEvent) -> bool:
        """Queue `event` if it is for this client. True when the subscription was idle
        and must be woken at the next flush (the hub keeps the list)."""
        if self._closed or not matches(self.channels, event, self.principal):
            return False
        if len(self._live) >= self.queue_limit:
            LIVE_SLOW_DISCONNECTS.labels(self.transport).inc()
            log.info("live_slow_consumer", transport=self.transport, queued=len(self._live))
            self.close("slow_consumer")
            return False
        self._live.append(event)
        if self.flagged:
            return False
        self.flagged = True
        return True

    def wake(self) -> None:
        self.flagged = False
        self._wakeup.set()

    def ping(self) -> None:
        """Nothing was written for a heartbeat interval: let the transport send a ping."""
        self._ping = True
        self._wakeup.set()

    def close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            self._live.clear()
            self._wakeup.set()

    @property
    def closed_reason(self) -> str | None:
        return self._closed

    def change_channels(self, channels: ChannelSet) -> None:
        self.channels = channels

    # -- called by the transport ---------------------------------------------------------
    def take(self, limit: int | None = None) -> list[PublishedEvent]:
        """What is queued and still for us, in order: the backlog first, then live events."""
        events: list[PublishedEvent] = []
        for queue in (self.backlog, self._live):
            while queue and (limit is None or len(events) < limit):
                event = queue.popleft()
                if event.position > self.position and matches(self.channels, event, self.principal):
                    self.position = event.position
                    events.append(event)
        return events

    async def next_batch(self) -> list[PublishedEvent]:
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
            await self._wakeup.wait()

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
        return len(self.backlog) + len(self._live)
