"""An inbox consumer: the other half of at-least-once delivery, for any Python service.

For each batch of messages — whatever the broker has already pushed (prefetch), up to
`batch_size`, waiting at most `batch_linger` seconds for it to fill — in the order the
queue delivers them, one database transaction:

1. `INSERT INTO broker_inbox (consumer, message_id, ...) SELECT … FROM unnest(…)
   ON CONFLICT DO NOTHING RETURNING message_id` — the claim of the whole batch. A
   message whose row already exists was processed before (the publisher sent it twice,
   or we died between our commit and our ack), as is a second copy inside the batch:
   nothing else happens to it.
2. the handler's own work for each claimed message, in delivery order, on the same session;
3. COMMIT — and only then one `basic.ack(multiple=True)` for the batch's last delivery
   tag. Dying before the ack means a redelivery of the batch, which step 1 turns into an
   ack without a second processing.

One commit (one WAL flush) per batch instead of per message is what lets one consumer
keep up with the order path (docs/events.md, "Measured"); an idle queue still costs one
message at most `batch_linger` of latency. A batch of one goes the one-at-a-time way.

A handler that raises rolls the batch back (every claim too): the batch is then handled
one message at a time, each in its own transaction — the messages before the failing
one commit, the failing one is tried again in place (`tries_per_delivery`, counting the
batch's try, with a doubling delay), so a transient failure does not reorder anything;
after the last try the message is nacked back to the queue. Side effects a handler has
outside `session` are therefore repeated for the messages ahead of a failure: keep the
work in the transaction (or make it idempotent), as at-least-once requires anyway. The queue
is a quorum queue with `x-delivery-limit`: after that many deliveries RabbitMQ moves it
to `<queue>.dead` (topology.py), where `replay_dead_letters` (replay.py) can send it back once the
bug is fixed. A message that is not a Shelfwise event at all is rejected straight to the
dead letters.

Ordering (one consumer per queue sees positions increasing; a nacked message comes back
behind the prefetched ones; several consumers on one queue keep no order at all) and
how a session ends (broker cancel, stop, lost connection: the batch in hand finishes):
docs/events.md, "Consumers: the inbox pattern"; docs/decisions/0025, 0034.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractQueueIterator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfwise.broker import metrics
from shelfwise.broker.envelope import BrokerEvent, from_message
from shelfwise.broker.inbox import CLAIM_BATCH_SQL, CLAIM_SQL
from shelfwise.broker.publisher import BROKER_ERRORS
from shelfwise.broker.replay import replay_dead_letters
from shelfwise.broker.topology import (
    DECLARE_TIMEOUT,
    DEFAULT_EXCHANGE,
    declare_consumer_queue,
)
from shelfwise.observability.tracing import EVENT_TYPE, link_from, linked_span, links_from

log = structlog.get_logger("shelfwise.broker.consumer")

__all__ = ["ConsumerConfig", "Handler", "InboxConsumer", "replay_dead_letters"]

Handler = Callable[[AsyncSession, BrokerEvent], Awaitable[None]]

# How long a stopping (or disconnected) consumer lets its batch in hand finish.
FINISH_TIMEOUT = 10.0


class HandlerFailed(Exception):
    """The handler raised for `message_id` inside a batch (the cause is chained)."""

    def __init__(self, message_id: str) -> None:
        super().__init__(message_id)
        self.message_id = message_id


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    queue: str
    patterns: tuple[str, ...]
    exchange: str = DEFAULT_EXCHANGE
    prefetch: int = 100
    # Messages claimed and handled in one transaction, at most; and how long to wait for
    # a batch to fill once its first message is here (1 / 0: one at a time, no wait).
    batch_size: int = 50
    batch_linger: float = 0.01
    delivery_limit: int = 5  # deliveries before a message is dead-lettered
    # Tries of one delivery before it is nacked: a transient failure (the database
    # restarting) is retried in place, so the messages behind it keep their order.
    tries_per_delivery: int = 3
    retry_delay: float = 0.2  # doubling between tries
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
    inbox_name: str | None = None  # the inbox key; the queue name by default

    @property
    def consumer(self) -> str:
        return self.inbox_name or self.queue


class InboxConsumer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        broker_url: str,
        config: ConsumerConfig,
        handler: Handler,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._sessions = sessions
        self._url = broker_url
        self._config = config
        self._handler = handler
        self._rng = rng or random.Random()  # noqa: S311 (jitter)
        self._last_position = 0
        self._in_hand: asyncio.Future[None] | None = None  # the batch being handled
        self.consuming = asyncio.Event()  # set while subscribed (tests wait on it)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set; reconnect with backoff when the broker goes away."""
        failures = 0
        while not stop.is_set():
            try:
                await self._consume(stop)
                failures = 0
            except BROKER_ERRORS as exc:
                failures += 1
                metrics.CONNECTION_FAILURES.labels("consumer").inc()
                ceiling = min(
                    self._config.backoff_max,
                    self._config.backoff_initial * 2.0 ** min(failures - 1, 30),
                )
                delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
                log.warning(
                    "broker_consumer_disconnected",
                    queue=self._config.queue,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in=round(delay, 2),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            finally:
                self.consuming.clear()

    async def _consume(self, stop: asyncio.Event) -> None:
        config = self._config
        async with await aio_pika.connect(self._url, timeout=5) as amqp:
            channel = await amqp.channel()
            await channel.set_qos(prefetch_count=config.prefetch, timeout=DECLARE_TIMEOUT)
            queue = await declare_consumer_queue(
                channel,
                exchange=config.exchange,
                queue=config.queue,
                patterns=config.patterns,
                delivery_limit=config.delivery_limit,
            )
            closed = asyncio.Event()
            amqp.close_callbacks.add(lambda *_: closed.set())
            # A consumer the broker cancels (basic.cancel: its queue deleted, or lost by
            # the node) leaves the channel and the connection open; aio-pika's plain
            # channel only logs it, and the iterator would wait forever for a delivery.
            cancelled = asyncio.Event()
            underlay = await channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(lambda *_: cancelled.set())
            # The iterator, not `queue.consume(callback)`: aio-pika runs callbacks as
            # concurrent tasks, which would process prefetched messages out of order.
            async with queue.iterator() as messages:
                self.consuming.set()
                log.info("broker_consuming", queue=config.queue, patterns=list(config.patterns))
                work = asyncio.ensure_future(self._drain(messages))
                ends = {
                    work,
                    asyncio.ensure_future(stop.wait()),
                    asyncio.ensure_future(closed.wait()),
                    asyncio.ensure_future(cancelled.wait()),
                }
                try:
                    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for end in ends:
                        end.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
                    await self._finish_in_hand()
            if cancelled.is_set() and not stop.is_set():
                raise ConnectionError("the broker cancelled the consumer (basic.cancel)")
            if not stop.is_set():
                raise ConnectionError("broker connection closed")

    async def _drain(self, messages: AbstractQueueIterator) -> None:
        """Batches of what was delivered, in order. A reader task moves deliveries into
        a local queue, so that waiting for a batch to fill (a timeout) never cancels the
        iterator mid-delivery; None marks the iterator's end."""
        deliveries: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()

        async def read() -> None:
            try:
                async for message in messages:
                    deliveries.put_nowait(message)
            finally:
                deliveries.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            ended = False
            while not ended:
                batch, ended = await self._next_batch(deliveries)
                if batch:
                    # Shielded: stopping, or losing the connection, does not cancel a
                    # batch inside its transaction (`_finish_in_hand`).
                    self._in_hand = asyncio.ensure_future(self._handle_any(batch))
                    await asyncio.shield(self._in_hand)
            await reader  # its error, if it ended with one
        finally:
            reader.cancel()

    async def _handle_any(self, batch: list[AbstractIncomingMessage]) -> None:
        if len(batch) == 1:
            await self.handle(batch[0])
        else:
            await self.handle_batch(batch)

    async def _finish_in_hand(self) -> None:
        """Let the batch being handled end its transaction: a batch cancelled inside its
        COMMIT may be committed with nobody knowing (its metrics, a test's record of
        commits), then only the inbox tells when it comes back. Its ack fails if the
        connection is gone; the redelivery is then recognised by the inbox."""
        in_hand, self._in_hand = self._in_hand, None
        if in_hand is None or in_hand.done():
            if in_hand is not None and not in_hand.cancelled():
                in_hand.exception()  # retrieved: raised already, or nothing to raise
            return
        done, _ = await asyncio.wait([in_hand], timeout=FINISH_TIMEOUT)
        if not done:
            in_hand.cancel()  # a handler stuck past the bound: abandoned, rolled back
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await in_hand

    async def _next_batch(
        self, deliveries: asyncio.Queue[AbstractIncomingMessage | None]
    ) -> tuple[list[AbstractIncomingMessage], bool]:
        """The next deliveries: one, then whatever else is already here or arrives within
        the linger, up to `batch_size`. True when the iterator ended."""
        first = await deliveries.get()
        if first is None:
            return [], True
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._config.batch_linger
        while len(batch) < self._config.batch_size:
            try:
                message = deliveries.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    # Safe to time out: Queue.get takes an item only once it resumes.
                    async with asyncio.timeout(remaining):
                        message = await deliveries.get()
                except TimeoutError:
                    break
            if message is None:
                return batch, True
            batch.append(message)
        return batch, False

    async def handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        """Claim, handle and commit `messages` in one transaction, then ack them all; if
        anything fails, handle them one at a time instead."""
        queue = self._config.queue
        events: list[tuple[AbstractIncomingMessage, BrokerEvent]] = []
        for message in messages:
            event = await self._parse(message)
            if event is not None:
                events.append((message, event))
        if not events:
            return
        links = links_from((event.trace, {EVENT_TYPE: event.type}) for _, event in events)
        try:
            with linked_span("consume batch", links, attributes={"shelfwise.batch": len(events)}):
                fresh = await self._process_batch([event for _, event in events])
        except Exception as exc:
            failed = exc.message_id if isinstance(exc, HandlerFailed) else None
            cause = exc.__cause__ if isinstance(exc, HandlerFailed) else exc
            log.warning(
                "broker_batch_failed",
                queue=queue,
                size=len(events),
                message_id=failed,
                error=f"{type(cause).__name__}: {cause}"[:300],
            )
            metrics.CONSUMED.labels(queue, "failed").inc()
            for message, event in events:
                # The batch was the failing message's first try.
                tried = 1 if event.message_id == failed else 0
                await self._handle_event(message, event, tried=tried)
            return
        # Every delivery up to the last one's tag: the whole batch (the malformed ones
        # among them were already rejected, and a tag is acknowledged only once).
        await events[-1][0].ack(multiple=True)
        for _, event in events:
            if event.message_id in fresh:
                fresh.discard(event.message_id)  # a second copy is a duplicate
                metrics.CONSUMED.labels(queue, "processed").inc()
            else:
                metrics.CONSUMED.labels(queue, "duplicate").inc()
                log.info("broker_message_duplicate", queue=queue, message_id=event.message_id)

    async def _process_batch(self, events: list[BrokerEvent]) -> set[str]:
        """The batch's claims and the handler for each claimed event, one transaction;
        returns the claimed message ids. Raises HandlerFailed naming the event whose
        handler raised (everything is rolled back)."""
        async with self._sessions() as session, session.begin():
            claimed = await session.execute(
                CLAIM_BATCH_SQL,
                {
                    "consumer": self._config.consumer,
                    "message_ids": [event.message_id for event in events],
                    "positions": [event.position for event in events],
                    "event_types": [event.type for event in events],
                },
            )
            fresh = {str(row[0]) for row in claimed}
            pending = set(fresh)
            last = self._last_position
            for event in events:
                if event.message_id not in pending:
                    continue
                pending.discard(event.message_id)
                last = self._check_order(event, last)
                try:
                    await self._handler(session, event)
                except Exception as exc:
                    raise HandlerFailed(event.message_id) from exc
        self._last_position = last
        return fresh

    async def _parse(self, message: AbstractIncomingMessage) -> BrokerEvent | None:
        """The event, or None for a message that is not a Shelfwise event (rejected
        straight to the dead letters)."""
        try:
            return from_message(message)
        except (KeyError, ValueError) as exc:
            log.error("broker_message_malformed", queue=self._config.queue, error=str(exc)[:200])
            metrics.CONSUMED.labels(self._config.queue, "failed").inc()
            await message.reject(requeue=False)
            return None

    def _check_order(self, event: BrokerEvent, last: int) -> int:
        if event.position < last:
            log.warning(
                "broker_message_out_of_order",
                queue=self._config.queue,
                position=event.position,
                after=last,
            )
        return max(last, event.position)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Process one delivery: claim in the inbox, handle, commit, then ack."""
        event = await self._parse(message)
        if event is not None:
            await self._handle_event(message, event, tried=0)

    async def _handle_event(
        self, message: AbstractIncomingMessage, event: BrokerEvent, *, tried: int
    ) -> None:
        """The tries left of `tries_per_delivery` (`tried` were made in a batch), in
        place, then a nack."""
        queue = self._config.queue
        link = link_from(event.trace, {EVENT_TYPE: event.type})
        delay = self._config.retry_delay * 2 ** max(tried - 1, 0)
        if tried and tried < self._config.tries_per_delivery:
            await asyncio.sleep(delay)
            delay *= 2
        for attempt in range(tried + 1, self._config.tries_per_delivery + 1):
            try:
                with linked_span(f"consume {event.type}", [link] if link else []):
                    fresh = await self._process(event)
                break
            except Exception as exc:  # the handler's bug or the database: try again
                log.warning(
                    "broker_message_failed",
                    queue=queue,
                    message_id=event.message_id,
                    position=event.position,
                    attempt=attempt,
                    deliveries=message.headers.get("x-delivery-count", 0),
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
                metrics.CONSUMED.labels(queue, "failed").inc()
            if attempt < self._config.tries_per_delivery:
                await asyncio.sleep(delay)
                delay *= 2
        else:
            # Back to the queue, behind what this consumer already prefetched: from here
            # on its order is lost (the delivery limit will dead-letter it if it persists).
            await message.nack(requeue=True)
            return
        await message.ack()
        metrics.CONSUMED.labels(queue, "processed" if fresh else "duplicate").inc()
        if not fresh:
            log.info("broker_message_duplicate", queue=queue, message_id=event.message_id)

    async def _process(self, event: BrokerEvent) -> bool:
        """The claim and the handler in one transaction; False when already processed."""
        async with self._sessions() as session, session.begin():
            claimed = await session.execute(
                CLAIM_SQL,
                {
                    "consumer": self._config.consumer,
                    "message_id": event.message_id,
                    "position": event.position,
                    "event_type": event.type,
                },
            )
            if claimed.first() is None:
                return False
            self._check_order(event, self._last_position)
            await self._handler(session, event)
        self._last_position = max(self._last_position, event.position)
        return True
