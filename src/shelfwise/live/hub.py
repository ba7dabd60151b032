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

Fan-out cost: subscriptions that see the same events form an *audience*
(`live/audience.py`); each event is matched once per audience, and at a *flush* every
member is handed the same batch, its frames joined once per audience (`joined`) and each
event encoded once per process (`encoded`). Each subscriber then writes everything
queued for it in one go, so the wake-ups and socket writes per second are connections /
flush interval, not connections x events/s. An SSE stream whose task waits with nothing
queued is not even woken: the flush writes the audience's chunk to its connection itself
(`Subscription.direct`, decision 0038). The interval adapts to the cost: at least
`flush_seconds`, and at least `FANOUT_SHARE` times as long as waking and writing to the
waiting subscribers is expected to take (per-subscriber cost measured on recent
flushes), so fan-out takes at most ~1/`FANOUT_SHARE` of the event loop and the rest
stays for requests — except on a live-role process, which has none to serve
(`LIVE_ROLE_FANOUT_SHARE`). One ticker task sends heartbeats to quiet connections and re-checks
credentials, one lookup per credential (`live/auth.py`).

Backpressure: each subscription holds at most `queue_limit` undelivered events. A client
too slow to drain it is disconnected with reason `slow_consumer` (it can resume from its
last position) instead of growing this process's memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Hashable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog
from opentelemetry.trace import SpanKind
from psycopg import AsyncConnection

from shelfwise.driverpool import DriverPool
from shelfwise.events.outbox import PublishedEvent
from shelfwise.events.published import newest_position, oldest_position, read_published
from shelfwise.identity.principal import Principal
from shelfwise.live.audience import Audience, Batch, audience_key
from shelfwise.live.channels import ChannelSet
from shelfwise.live.subscription import WRITTEN, Closed, Subscription
from shelfwise.observability.metrics import LIVE_EVENTS_SENT, LIVE_FANOUT_LATENCY, LIVE_RESUMES
from shelfwise.observability.trace_events import batch_span
from shelfwise.reconnect import ReconnectBackoff

if TYPE_CHECKING:
    from shelfwise.live.credentials import Credential, Reauthorization

__all__ = ["Closed", "Hub", "Reset", "Subscription", "lag_seconds"]

log = structlog.get_logger("shelfwise.live")
Wake = Callable[[], AsyncGenerator[None]]
T = TypeVar("T")
Wire = TypeVar("Wire", str, bytes)
# The shortest flush interval (it adds up to this much to the delivery lag), and how many
# times the last fan-out's duration the next one waits at least (docs/live.md).
FLUSH_SECONDS = 0.05
FANOUT_SHARE = 2.0
MAX_FLUSH_SECONDS = 1.0
# A `serve --role live` process has no requests to leave room for: the next flush may
# start as soon as the last one has written (every interval spent idle was pure lag) —
# except its own connects. While streams are opening, fan-out gets at most half of the
# loop (`CONNECTING_FANOUT_SHARE`): back to back, it left 5,000 connects under events
# 60 s and connect -> headers p99 17 s, against 24 s and 2.7 s (bench.live_cost, 13:22).
LIVE_ROLE_FANOUT_SHARE = 1.0
CONNECTING_FANOUT_SHARE = FANOUT_SHARE


@dataclass(frozen=True, slots=True)
class Reset:
    """The client's position cannot be served: reload the snapshot, continue from `position`."""

    reason: str  # position_too_old | position_ahead
    position: int
    snapshot: str = "/v1/stock"


class Hub:
    def __init__(
        self,
        driver: DriverPool | None,
        *,
        window: int = 10_000,
        batch_size: int = 500,
        queue_limit: int = 1000,
        max_backlog: int = 50_000,
        flush_seconds: float = FLUSH_SECONDS,
        fanout_share: float = FANOUT_SHARE,
        heartbeat_seconds: float = 15.0,
        rechecks: Reauthorization | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The stream is read back after every commit burst, on the driver pool: no ORM
        # objects built per event (events/published.py, decision 0037). None only for a
        # hub that is fed by hand and never reads the database (tests, bench.fanout).
        self._driver = driver
        self._max_backlog = max_backlog
        self._window: deque[PublishedEvent] = deque(maxlen=window)
        self._batch = batch_size
        self.queue_limit = queue_limit
        self.head = 0
        self._subscriptions: set[Subscription] = set()
        self._audiences: dict[Hashable, Audience[Subscription]] = {}
        self._frames: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._frames_max = 4096
        self._tasks: list[asyncio.Task[None]] = []
        self._catching_up = asyncio.Lock()
        self.draining = False
        # Called with every event, in order (e.g. cache invalidation); must not block.
        self.listeners: list[Callable[[PublishedEvent], None]] = []
        self.flush_seconds = flush_seconds
        self.fanout_share = fanout_share
        # Audiences with events for the next flush (a dict: insertion-ordered set).
        self._due: dict[Audience[Subscription], None] = {}
        self._flush_at: asyncio.TimerHandle | None = None
        self._last_flush = float("-inf")
        # What waking and writing to one subscriber cost in recent flushes; the cheapest is
        # the estimate, so one flush stretched by a GC pause does not slow the next ones.
        self._costs: deque[float] = deque(maxlen=4)
        self._connects = 0  # subscriptions since the last flush
        self.heartbeat_seconds = heartbeat_seconds
        self.rechecks = rechecks
        self._clock = clock

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self, wake: Wake) -> None:
        async with self._database() as conn:
            self.head = await newest_position(conn)
        self._tasks = [
            asyncio.create_task(self._follow(wake), name="live-hub"),
            asyncio.create_task(self._tick(), name="live-hub-ticker"),
        ]

    async def _follow(self, wake: Wake) -> None:
        backoff = ReconnectBackoff()  # 0.5 s doubling to 5 s, jittered (reconnect.py)
        while True:
            started = time.monotonic()
            try:
                # aclosing: on cancellation the feed's connection is closed now, not
                # whenever the garbage collector finalizes the generator.
                async with contextlib.aclosing(wake()) as wakes:
                    async for _ in wakes:
                        await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a lost feed connection: log, reconnect
                delay = backoff.after(time.monotonic() - started)
                log.warning("live_feed_lost", error=type(exc).__name__, retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _tick(self) -> None:
        """One timer for every connection: heartbeats for the quiet ones, and the shared
        re-check of credentials (instead of a timer and a lookup per connection)."""
        period = min(1.0, self.heartbeat_seconds / 2)
        if self.rechecks is not None:
            period = min(period, self.rechecks.interval / 2)
        while True:
            await asyncio.sleep(period)
            self.heartbeats(self._clock())
            if self.rechecks is not None:
                await self.rechecks.sweep(now=self._clock())

    def heartbeats(self, now: float) -> None:
        for subscription in self._subscriptions:
            if subscription.quiet_until <= now:
                subscription.quiet_until = now + self.heartbeat_seconds
                subscription.ping()

    def drain(self) -> None:
        """Graceful shutdown: tell every client to reconnect elsewhere, accept no more."""
        self.draining = True
        for subscription in list(self._subscriptions):
            subscription.close("draining")

    async def stop(self) -> None:
        self.drain()
        if self._flush_at is not None:
            self._flush_at.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the stream ----------------------------------------------------------------------
    async def catch_up(self) -> int:
        """Read everything published after `head`, remember it, queue it for subscribers."""
        delivered = 0
        async with self._catching_up:
            while True:
                events = await self._read_page(self.head)
                # The span links to each event's writer (nothing when tracing is off).
                with batch_span(
                    "live fan-out",
                    events,
                    destination="live",
                    operation="process",
                    kind=SpanKind.CONSUMER,
                ):
                    self.publish(events)
                delivered += len(events)
                if len(events) < self._batch:
                    return delivered

    def publish(self, events: Iterable[PublishedEvent]) -> None:
        """Remember events read from the outbox (in position order; any at or below
        `head` are repeats and skipped) and match each once per audience; the audiences'
        subscriptions get them together at the next flush."""
        due = self._due
        audiences = self._audiences.values()
        for event in events:
            if event.position <= self.head:
                continue
            self._window.append(event)
            self.head = event.position
            for listener in self.listeners:
                listener(event)
            for audience in audiences:
                if audience.wants(event):
                    audience.pending.append(event)
                    due[audience] = None
        if due and self._flush_at is None:
            # Now if the last flush is a flush interval old, else when it is: under a
            # steady event rate each connection gets one write per interval with
            # everything since, instead of a wake-up and a write per event.
            delay = self._last_flush + self.flush_interval() - self._clock()
            if delay <= 0:
                self.flush()
            else:
                self._flush_at = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush_interval(self) -> float:
        """How long after the last flush the next may start, given who is waiting."""
        waiting = sum(len(audience.members) for audience in self._due)
        fanout = min(self._costs, default=0.0) * waiting
        share = self.fanout_share
        if self._connects:  # streams are opening: leave them room (CONNECTING_FANOUT_SHARE)
            share = max(share, CONNECTING_FANOUT_SHARE)
        return min(max(self.flush_seconds, share * fanout), MAX_FLUSH_SECONDS)

    def flush(self) -> None:
        """Hand each audience's events, as one shared batch, to its subscriptions."""
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        now = self._last_flush = self._clock()
        due, self._due = self._due, {}
        self._connects = 0
        quiet_until = now + self.heartbeat_seconds
        woken = 0
        for audience in due:
            batch = Batch(audience.pending)
            audience.pending = []
            written: dict[str, int] = {}
            for subscription in tuple(audience.members):
                outcome = subscription.offer(batch)
                if outcome:
                    subscription.quiet_until = quiet_until
                    woken += 1
                    if outcome == WRITTEN:
                        transport = subscription.transport
                        written[transport] = written.get(transport, 0) + 1
            for transport, count in written.items():
                self._written(batch, transport, count)
        # The woken tasks run in the loop's next pass, in order; a callback queued after
        # them runs once the last has written (or blocked on a full socket).
        if woken:
            asyncio.get_running_loop().call_soon(self._fanned_out, now, woken)

    def _written(self, batch: Batch, transport: str, count: int) -> None:
        """The metrics of `count` direct writes of `batch` (a woken transport counts its
        own write): the events sent, and one lag observation for them all — the oldest
        event's, now that the last of them is written."""
        LIVE_EVENTS_SENT.labels(transport).inc(len(batch) * count)
        LIVE_FANOUT_LATENCY.labels(transport).observe(self.lag_seconds(batch[0]))

    def _fanned_out(self, started: float, woken: int) -> None:
        self._costs.append((self._clock() - started) / woken)

    def joined(
        self,
        events: Sequence[PublishedEvent],
        wire: str,
        encode: Callable[[PublishedEvent], Wire],
        separator: Wire,
    ) -> Wire:
        """The frames of `events` joined for one write. A whole flush batch is joined
        once for its audience (5,000 streams on `stock`: one join, not 5,000)."""
        if isinstance(events, Batch):
            frame = cast("Wire | None", events.encodings.get(wire))
            if frame is None:
                frame = events.encodings[wire] = self.joined(list(events), wire, encode, separator)
            return frame
        return separator.join([self.encoded(event, wire, encode) for event in events])

    def encoded(self, event: PublishedEvent, wire: str, encode: Callable[[PublishedEvent], T]) -> T:
        """The event's wire frame, encoded once per process and shared by every
        subscriber (1,000 SSE clients must not mean 1,000 `json.dumps` per event)."""
        key = (wire, event.position)
        frame = self._frames.get(key)
        if frame is None:
            frame = self._frames[key] = encode(event)
            while len(self._frames) > self._frames_max:
                self._frames.popitem(last=False)
        return cast(T, frame)

    def lag_seconds(self, event: PublishedEvent) -> float:
        """`lag_seconds(event)`, with the event's timestamp converted once per process."""
        return max(time.time() - self.encoded(event, "created", _created), 0.0)

    # -- subscriptions -------------------------------------------------------------------
    async def subscribe(
        self,
        channels: ChannelSet,
        principal: Principal,
        *,
        since: int | None,
        transport: str,
        credential: Credential | None = None,
    ) -> tuple[Subscription, Reset | None]:
        if self.draining:
            raise Closed("draining")
        if since is not None and since > self.head:
            # Another instance's hub is ahead of this one (its feed woke first, or this one
            # is still reconnecting after a database outage): read up to the client rather
            # than tell it to reload. A position truly ahead still gets its reset below.
            await self.catch_up()
        subscription = Subscription(
            channels, principal, transport, queue_limit=self.queue_limit, credential=credential
        )
        now = self._clock()
        subscription.quiet_until = now + self.heartbeat_seconds
        head = self.head
        subscription.position = head if since is None else since
        self._subscriptions.add(subscription)  # live events after `head` queue from now on
        self._connects += 1
        self._join(subscription)
        if credential is not None and self.rechecks is not None:
            self.rechecks.watch(credential, subscription, now=now)
        reset = None
        if since is not None and since != head:
            reset = await self._load_backlog(subscription, since, head)
            if reset is not None:
                subscription.position = head
        return subscription, reset

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)
        self._leave(subscription)
        if subscription.credential is not None and self.rechecks is not None:
            self.rechecks.unwatch(subscription.credential, subscription)

    def change_channels(self, subscription: Subscription, channels: ChannelSet) -> None:
        """A WebSocket client (un)subscribed channels on its open subscription."""
        self._leave(subscription)
        subscription.change_channels(channels)
        if subscription in self._subscriptions:
            self._join(subscription)

    def _join(self, subscription: Subscription) -> None:
        key = audience_key(subscription.channels, subscription.principal)
        audience = self._audiences.get(key)
        if audience is None:
            audience = self._audiences[key] = Audience(
                subscription.channels, subscription.principal
            )
        audience.members.add(subscription)
        subscription.audience = audience

    def _leave(self, subscription: Subscription) -> None:
        audience, subscription.audience = subscription.audience, None
        if audience is not None:
            audience.members.discard(subscription)
            if not audience.members:
                self._audiences.pop(audience_key(audience.channels, audience.principal), None)

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
            subscription.backlog.extend(e for e in self._window if since < e.position <= head)
            LIVE_RESUMES.labels(transport, "window").inc()
            return None
        oldest = await self._oldest_position()
        if oldest is not None and oldest > since + 1:
            LIVE_RESUMES.labels(transport, "reset").inc()
            return Reset("position_too_old", head)
        after = since
        while after < head:
            page = [e for e in await self._read_page(after) if e.position <= head]
            if not page:
                break
            subscription.backlog.extend(page)
            after = page[-1].position
        LIVE_RESUMES.labels(transport, "database").inc()
        return None

    def _database(self) -> AbstractAsyncContextManager[AsyncConnection[Any]]:
        if self._driver is None:
            raise RuntimeError("this hub has no database to read (built without a driver)")
        return self._driver.connection()

    async def _read_page(self, after: int) -> list[PublishedEvent]:
        async with self._database() as conn:
            return await read_published(conn, after, self._batch)

    async def _oldest_position(self) -> int | None:
        async with self._database() as conn:
            return await oldest_position(conn)


def _created(event: PublishedEvent) -> float:
    return event.created_at.timestamp()


def lag_seconds(event: PublishedEvent) -> float:
    """Commit (≈ insert) to now: what the fan-out latency histogram measures."""
    return max((datetime.now(UTC) - event.created_at).total_seconds(), 0.0)
