"""`shelfwise consume`: the documented example consumer, and how to plug a handler in.

The default handler only logs each event (`broker_event_consumed`); `--handler
module:function` names another `async def handle(session, event)`. Whatever it writes
through `session` commits together with the inbox rows of its batch, before the ack;
what it does outside the session may be repeated (a batch that fails falls back to one
message at a time).
"""

from __future__ import annotations

import asyncio
import importlib
import signal
from collections.abc import Sequence
from typing import cast

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.broker.consumer import ConsumerConfig, Handler, InboxConsumer
from shelfwise.broker.envelope import BrokerEvent
from shelfwise.config import Settings
from shelfwise.db import open_database

log = structlog.get_logger("shelfwise.broker.example")


async def log_event(session: AsyncSession, event: BrokerEvent) -> None:
    del session  # nothing to write besides the inbox row
    log.info(
        "broker_event_consumed",
        message_id=event.message_id,
        position=event.position,
        type=event.type,
        aggregate=f"{event.aggregate_type}/{event.aggregate_id}",
        redelivered=event.redelivered,
    )


def load_handler(spec: str | None) -> Handler:
    if not spec:
        return log_event
    module, _, attr = spec.partition(":")
    if not attr:
        raise ValueError("a handler is given as module:function")
    return cast(Handler, getattr(importlib.import_module(module), attr))


async def run_consumer(
    settings: Settings,
    database_url: str,
    *,
    queue: str,
    patterns: Sequence[str],
    handler: Handler,
) -> None:
    """Consume until SIGTERM or SIGINT."""
    assert settings.broker_url is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    db = open_database(settings, database_url)
    consumer = InboxConsumer(
        db.sessions,
        settings.broker_url,
        ConsumerConfig(
            queue=queue,
            patterns=tuple(patterns),
            exchange=settings.broker_exchange,
            prefetch=settings.broker_prefetch,
            batch_size=settings.broker_consumer_batch_size,
            batch_linger=settings.broker_consumer_linger_ms / 1000,
            delivery_limit=settings.broker_delivery_limit,
            backoff_max=settings.broker_backoff_max_seconds,
        ),
        handler,
    )
    try:
        await consumer.run(stop)
    finally:
        await db.dispose()
