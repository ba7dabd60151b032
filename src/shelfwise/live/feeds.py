"""What wakes the hub when the relay has published: Postgres NOTIFY or Redis pub/sub.

Both only carry "something new up to position N"; the events themselves are always read
from the outbox, so a lost or duplicated wake-up costs one query, never an event. Each
feed also wakes on a timer, the safety net for a notification lost while reconnecting.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

import psycopg
from redis.asyncio import Redis

from shelfwise.events.outbox import STREAM_CHANNEL
from shelfwise.live.hub import Wake

REDIS_STREAM_CHANNEL = "shelfwise:stream"


def postgres_feed(url: str, *, poll_seconds: float = 1.0) -> Wake:
    async def wake() -> AsyncGenerator[None]:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, application_name="shelfwise-live"
        ) as conn:
            await conn.execute(f"LISTEN {STREAM_CHANNEL}")
            yield None  # catch up once at start
            while True:
                # Run `notifies()` to its end, never `break` out of it: a suspended
                # notifies() generator keeps holding the connection's lock.
                async for _ in conn.notifies(timeout=poll_seconds, stop_after=1):
                    pass
                yield None

    return wake


def redis_feed(redis: Redis, *, poll_seconds: float = 1.0) -> Wake:
    async def wake() -> AsyncGenerator[None]:
        pubsub = redis.pubsub()
        await pubsub.subscribe(REDIS_STREAM_CHANNEL)
        try:
            yield None
            while True:
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_seconds)
                yield None
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    return wake


def redis_publisher(redis_url: str) -> Callable[[int], Awaitable[None]]:
    """For the relay: announce "published up to N" to every instance's hub via Redis."""
    redis = Redis.from_url(redis_url)

    async def publish(position: int) -> None:
        await redis.publish(REDIS_STREAM_CHANNEL, str(position))

    return publish
