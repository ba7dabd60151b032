"""Dead-letter replay: what `<queue>.dead` holds goes back to its queue once fixed."""

from __future__ import annotations

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from shelfwise.broker import metrics
from shelfwise.broker.topology import DECLARE_TIMEOUT, dead_letter_queue_name

log = structlog.get_logger("shelfwise.broker.consumer")


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
