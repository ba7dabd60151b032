"""Names and declarations: the events exchange, consumer queues and their dead letters.

    shelfwise.events (topic, durable)
       │ routing key = event type, e.g. order.reserved; a queue binds patterns (order.*)
       ▼
    <queue> (quorum, durable; x-delivery-limit = N)
       │ after N failed deliveries RabbitMQ dead-letters the message
       ▼
    shelfwise.events.dead-letter (direct) ──routing key <queue>──▶ <queue>.dead

Quorum queues count deliveries themselves (`x-delivery-count`): a message whose consumer
nacked it, or died holding it, comes back with a higher count, and past the limit goes to
the dead-letter exchange, so a poison message cannot block its queue forever. Declaring is
idempotent; declaring an existing queue with other arguments fails (PRECONDITION_FAILED),
which is what should happen when two deployments disagree about a queue.
"""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

DEFAULT_EXCHANGE = "shelfwise.events"
# A broker that accepts connections but does not answer (a queue without its leader)
# must fail a declaration, not hang its caller forever.
DECLARE_TIMEOUT = 10.0


def dead_letter_exchange_name(exchange: str) -> str:
    return f"{exchange}.dead-letter"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dead"


async def declare_events_exchange(channel: AbstractChannel, name: str) -> AbstractExchange:
    return await channel.declare_exchange(
        name, aio_pika.ExchangeType.TOPIC, durable=True, timeout=DECLARE_TIMEOUT
    )


async def declare_consumer_queue(
    channel: AbstractChannel,
    *,
    exchange: str,
    queue: str,
    patterns: Sequence[str],
    delivery_limit: int,
) -> AbstractQueue:
    """The queue bound to `patterns` on the events exchange, and its dead-letter queue."""
    events = await declare_events_exchange(channel, exchange)
    dead_exchange = await channel.declare_exchange(
        dead_letter_exchange_name(exchange),
        aio_pika.ExchangeType.DIRECT,
        durable=True,
        timeout=DECLARE_TIMEOUT,
    )
    dead = await channel.declare_queue(
        dead_letter_queue_name(queue),
        durable=True,
        arguments={"x-queue-type": "quorum"},
        timeout=DECLARE_TIMEOUT,
    )
    await dead.bind(dead_exchange, routing_key=queue, timeout=DECLARE_TIMEOUT)
    declared = await channel.declare_queue(
        queue,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": dead_letter_exchange_name(exchange),
            "x-dead-letter-routing-key": queue,
        },
        timeout=DECLARE_TIMEOUT,
    )
    for pattern in patterns:
        await declared.bind(events, routing_key=pattern, timeout=DECLARE_TIMEOUT)
    return declared
