"""The per-process live hub: one ordered stream in, many filtered client streams out.

The relay publishes positions (Postgres NOTIFY, or Redis pub/sub across instances); a
feed wakes the hub, which reads the new events from the outbox *once* for the whole
process, keeps the last `window` of them in memory, and offers each to every local
subscriber. A client that (re)connects with a position gets what it missed from that
window when the gap is short, from the outbox table when it is longer — or a clear
`reset` when the events it needs were pruned, so it reloads the snapshot.

Ordering and exactly-once per connection: a subscription registers *before* its backlog
is read, at the hub's current head H. Live events (> H) queue up while the backlog
(since, H] is fetched; the backlog is delivered first. Nothing falls in between.

Backpressure: each subscription holds at most `queue_limit` undelivered events. A client
too slow to drain it is disconnected with reason `slow_consumer` (it can resume from its
last position) instead of growing this process's memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfwise.events.models import OutboxEvent
from shelfwise.events.outbox import PublishedEvent, read_stream
from shelfwise.identity.principal import Principal
from shelfwise.live.channels import ChannelSet, matches
from shelfwise.observability.metrics import LIVE_RESUMES, LIVE_SLOW_DISCONNECTS

log = structlog.get_logger("shelfwise.live")
Wake = Callable[[], AsyncGenerator[None]]


@dataclass(frozen=True, slots=True)
class Reset:
    """The client's position cannot be served: reload the snapshot, continue from `position`."""

    reason: str  # position_too_old | position_ahead
    position: int
    snapshot: str = "/v1/stock"


class Closed(Exception):
    """The subscription ended; `reason` says why (slow_consumer, draining, revoked)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    def __init__(self, hub: Hub, channels: ChannelSet, principal: Principal, transport: str):
        self.hub = hub
        self.channels = channels
        self.principal = principal
        self.transport = transport
        self.position = 0  # last position delivered (or skipped as not ours)
        self._backlog: deque[PublishedEvent] = deque()
        self._live: deque[PublishedEvent] = deque()
        self._wakeup = asyncio.Event()
        self._closed: str | None = None

    # -- called by the hub ---------------------------------------------------------------
    def offer(self, event: PublishedEvent) -> None:
        if self._closed or not matches(self.channels, event, self.principal):
            return
        if len(self._live) >= self.hub.queue_limit:
            LIVE_SLOW_DISCONNECTS.labels(self.transport).inc()
            log.info("live_slow_consumer", transport=self.transport, queued=len(self._live))
            self.close("slow_consumer")
            return
        self._live.append(event)
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
    async def next(self, wait_seconds: float) -> PublishedEvent | None:
        """The next event in order, or None when `wait_seconds` pass first (heartbeat time)."""
        while True:
            if self._closed:
                raise Closed(self._closed)
            queue = self._backlog or self._live
            while queue:
                event = queue.popleft()
                if event.position > self.position and matches(self.channels, event, self.principal):
                    self.position = event.position
                    return event
            self._wakeup.clear()
            try:
                async with asyncio.timeout(wait_seconds):
                    await self._wakeup.wait()
            except TimeoutError:
                return None

    def pending(self) -> int:
        return len(self._backlog) + len(self._live)


class Hub:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        window: int = 10_000,
        batch_size: int = 500,
        queue_limit: int = 1000,
        max_backlog: int = 50_000,
    ) -> None:
        self._sessions = sessions
        self._max_backlog = max_backlog
        self._window: deque[PublishedEvent] = deque(maxlen=window)
        self._batch = batch_size
        self.queue_limit = queue_limit
        self.head = 0
        self._subscriptions: set[Subscription] = set()
        self._frames: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._frames_max = 4096
        self._task: asyncio.Task[None] | None = None
        self._catching_up = asyncio.Lock()
        self.draining = False
        # Called with every event, in order (e.g. cache invalidation); must not block.
        self.listeners: list[Callable[[PublishedEvent], None]] = []

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, wake: Wake) -> None:
        async with self._sessions() as session, session.begin():
            self.head = int(
                await session.scalar(select(func.coalesce(func.max(OutboxEvent.position), 0))) or 0
            )
        self._task = asyncio.create_task(self._follow(wake), name="live-hub")

    async def _follow(self, wake: Wake) -> None:
        while True:
            try:
                # aclosing: on cancellation the feed's connection is closed now, not
                # whenever the garbage collector finalizes the generator.
                async with contextlib.aclosing(wake()) as wakes:
                    async for _ in wakes:
                        await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost feed connection: log, reconnect
                log.warning("live_feed_lost", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    def drain(self) -> None:
        """Graceful shutdown: tell every client to reconnect elsewhere, accept no more."""
        self.draining = True
        for subscription in list(self._subscriptions):
            subscription.close("draining")

    async def stop(self) -> None:
        self.drain()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the stream ----------------------------------------------------------------------
    async def catch_up(self) -> int:
        """Read everything published after `head`, remember it, fan it out."""
        delivered = 0
        async with self._catching_up:
            while True:
                async with self._sessions() as session:
                    events = await read_stream(session, self.head, self._batch)
                for event in events:
                    self._window.append(event)
                    self.head = event.position
                    for listener in self.listeners:
                        listener(event)
                    for subscription in list(self._subscriptions):
                        subscription.offer(event)
                delivered += len(events)
                if len(events) < self._batch:
                    return delivered

    def encoded(
        self, event: PublishedEvent, wire: str, encode: Callable[[PublishedEvent], str]
    ) -> str:
        """The event's wire frame, encoded once per process and shared by every
        subscriber (1,000 SSE clients must not mean 1,000 `json.dumps` per event)."""
        key = (wire, event.position)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = encode(event)
            while len(self._frames) > self._frames_max:
                self._frames.popitem(last=False)
        return frame

    # -- subscriptions -------------------------------------------------------------------
    async def subscribe(
        self, channels: ChannelSet, principal: Principal, *, since: int | None, transport: str
    ) -> tuple[Subscription, Reset | None]:
        if self.draining:
            raise Closed("draining")
        subscription = Subscription(self, channels, principal, transport)
        head = self.head
        subscription.position = head if since is None else since
        self._subscriptions.add(subscription)  # live events after `head` queue from now on
        reset = None
        if since is not None and since != head:
            reset = await self._load_backlog(subscription, since, head)
            if reset is not None:
                subscription.position = head
        return subscription, reset

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    @property
    def subscriptions(self) -> int:
        return len(self._subscriptions)

    async def _load_backlog(
        self, subscription: Subscription, since: int, head: int
    ) -> Reset | None:
        transport = subscription.transport
        if since > head:
            LIVE_RESUMES.labels(transport, "reset").inc()
            return Reset("position_ahead", head)
        if head - since > self._max_backlog:  # cheaper to reload the snapshot
            LIVE_RESUMES.labels(transport, "reset").inc()
            return Reset("position_too_old", head)
        if self._window and self._window[0].position <= since + 1:
            subscription._backlog.extend(e for e in self._window if since < e.position <= head)
            LIVE_RESUMES.labels(transport, "window").inc()
            return None
        async with self._sessions() as session, session.begin():
            oldest = await session.scalar(select(func.min(OutboxEvent.position)))
        if oldest is not None and oldest > since + 1:
            LIVE_RESUMES.labels(transport, "reset").inc()
            return Reset("position_too_old", head)
        after = since
        while after < head:
            async with self._sessions() as session:
                page = await read_stream(session, after, self._batch)
            page = [e for e in page if e.position <= head]
            if not page:
                break
            subscription._backlog.extend(page)
            after = page[-1].position
        LIVE_RESUMES.labels(transport, "database").inc()
        return None


def lag_seconds(event: PublishedEvent) -> float:
    """Commit (≈ insert) to now: what the fan-out latency histogram measures."""
    return max((datetime.now(UTC) - event.created_at).total_seconds(), 0.0)


Recheck = Callable[[], Awaitable[bool]]
