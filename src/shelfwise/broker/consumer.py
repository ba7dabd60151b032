"""An inbox consumer: the other half of at-least-once delivery, for any Python service.

For each message, in the order the queue delivers them, one database transaction:

1. `INSERT INTO broker_inbox (consumer, message_id, ...) ON CONFLICT DO NOTHING` — the
   claim. If the row already exists the message was processed before (the publisher sent
   it twice, or we died between our commit and our ack): nothing else happens.
2. the handler's own work, on the same session;
3. COMMIT — and only then `basic.ack`. Dying before the ack means a redelivery, which
   step 1 turns into an ack without a second processing.

A handler that raises rolls the transaction back (the claim too) and is tried again in
place (`tries_per_delivery`, with a doubling delay), so a transient failure does not
reorder anything; after the last try the message is nacked back to the queue. The queue
is a quorum queue with `x-delivery-limit`: after that many deliveries RabbitMQ moves it
to `<queue>.dead` (topology.py), where `replay_dead_letters` can send it back once the
bug is fixed. A message that is not a Shelfwise event at all is rejected straight to the
dead letters.

Ordering: RabbitMQ delivers one queue's messages in the order they were published, and
the publisher publishes in stream order on one channel, so ONE consumer of a queue
processing messages one by one (as here) sees positions increasing — duplicates aside,
which the inbox drops. A consumer that dies gives back its unacked messages, which are
redelivered to the next consumer in order. A nacked message is not: it is redelivered
after the messages already prefetched (measured: position 788 came back after 886),
which is why failures are retried in place first; one that still fails has lost its
place. With SEVERAL consumers on one queue, messages are spread round-robin and
processed concurrently: no order at all, not even per aggregate. Per-aggregate order
with parallelism needs one queue per partition (the consistent-hash exchange keyed on
`aggregate_id`), or a per-aggregate version check in the handler (`stock.changed`
carries `level_version`).
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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfwise.broker import metrics
from shelfwise.broker.envelope import BrokerEvent, from_message
from shelfwise.broker.publisher import BROKER_ERRORS
from shelfwise.broker.topology import (
    DECLARE_TIMEOUT,
    DEFAULT_EXCHANGE,
    dead_letter_queue_name,
    declare_consumer_queue,
)
from shelfwise.observability.tracing import EVENT_TYPE, link_from, linked_span

log = structlog.get_logger("shelfwise.broker.consumer")

Handler = Callable[[AsyncSession, BrokerEvent], Awaitable[None]]

CLAIM_SQL = text(
    "INSERT INTO broker_inbox (consumer, message_id, position, event_type)"
    " VALUES (:consumer, :message_id, :position, :event_type)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    queue: str
    patterns: tuple[str, ...]
    exchange: str = DEFAULT_EXCHANGE
    prefetch: int = 50
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
                }
                try:
                    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for end in ends:
                        end.cancel()
                    # A message being handled is abandoned: rolled back, redelivered.
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
            if not stop.is_set():
                raise ConnectionError("broker connection closed")

    async def _drain(self, messages: AbstractQueueIterator) -> None:
        async for message in messages:
            await self.handle(message)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        """Process one delivery: claim in the inbox, handle, commit, then ack."""
        queue = self._config.queue
        try:
            event = from_message(message)
        except (KeyError, ValueError) as exc:
            log.error("broker_message_malformed", queue=queue, error=str(exc)[:200])
            metrics.CONSUMED.labels(queue, "failed").inc()
            await message.reject(requeue=False)  # straight to the dead letters
            return
        link = link_from(event.trace, {EVENT_TYPE: event.type})
        delay = self._config.retry_delay
        for attempt in range(1, self._config.tries_per_delivery + 1):
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
            if event.position < self._last_position:
                log.warning(
                    "broker_message_out_of_order",
                    queue=self._config.queue,
                    position=event.position,
                    after=self._last_position,
                )
            await self._handler(session, event)
        self._last_position = max(self._last_position, event.position)
        return True


async def replay_dead_letters(broker_url: str, *, queue: str, limit: int | None = None) -> int:
    """Send the messages now in `<queue>.dead` back to `queue` (through the default
    exchange, so no other queue bound to the event type gets them twice).

    Only the messages present when it starts are replayed, so a message that fails again
    is not replayed in a loop. Each is acked from the dead-letter queue only after the
    broker confirmed its copy: a crash mid-replay duplicates, never loses. Returns the count.
    """
    replayed = 0
    async with await aio_pika.connect(broker_url, timeout=5) as amqp:
        channel = await amqp.channel(publisher_confirms=True, on_return_raises=True)
        dead = await channel.declare_queue(
            dead_letter_queue_name(queue), passive=True, timeout=DECLARE_TIMEOUT
        )
        waiting = dead.declaration_result.message_count or 0
        budget = waiting if limit is None else min(waiting, limit)
        while replayed < budget:
            message = await dead.get(no_ack=False, fail=False, timeout=DECLARE_TIMEOUT)
            if message is None:
                break
            await channel.default_exchange.publish(
                _copy(message), routing_key=queue, timeout=DECLARE_TIMEOUT
            )
            await message.ack()
            replayed += 1
            metrics.DEAD_LETTERS_REPLAYED.labels(queue).inc()
    log.info("broker_dead_letters_replayed", queue=queue, replayed=replayed)
    return replayed


def _copy(message: AbstractIncomingMessage) -> aio_pika.Message:
    headers = {k: v for k, v in message.headers.items() if not k.startswith("x-")}
    replays = message.headers.get("x-shelfwise-replays", 0)
    headers["x-shelfwise-replays"] = int(replays if isinstance(replays, int) else 0) + 1
    return aio_pika.Message(
        body=message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
    )
