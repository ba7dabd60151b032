"""What wakes the hub when the relay has published: Postgres NOTIFY or Redis pub/sub.

Both only carry "something new up to position N"; the events themselves are always read
from the outbox, so a lost or duplicated wake-up costs one query, never an event. Each
feed also wakes on a timer, the safety net for a notification lost while reconnecting.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import psycopg
from redis.asyncio import Redis

from shelfwise.events.outbox import STREAM_CHANNEL
from shelfwise.live.hub import Wake
from shelfwise.shared_state import (
    REDIS_DOWN,
    REDIS_RETRY_SECONDS,
    redis_client,
    redis_failed,
    redis_ok,
)

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


def failover_feed(
    primary: Wake,
    fallback: Wake,
    *,
    retry_primary_seconds: float = REDIS_RETRY_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Wake:
    """Redis pub/sub while it works; Postgres NOTIFY while Redis is down.

    The relay NOTIFYs every publication whether or not it also publishes to Redis, so
    the fallback misses nothing; each switch starts with a wake-up (a catch-up read from
    the outbox), so neither does the switch. Redis is tried again every
    `retry_primary_seconds`. If the fallback fails too, the error reaches the hub, which
    reconnects."""

    async def wake() -> AsyncGenerator[None]:
        while True:
            try:
                async with contextlib.aclosing(primary()) as wakes:
                    async for _ in wakes:
                        redis_ok("live_feed")
                        yield None
            except REDIS_DOWN as exc:
                redis_failed("live_feed", exc)
            until = clock() + retry_primary_seconds
            async with contextlib.aclosing(fallback()) as wakes:
                async for _ in wakes:
                    yield None
                    if clock() >= until:
                        break

    return wake


def redis_publisher(redis_url: str) -> Callable[[int], Awaitable[None]]:
    """For the relay: announce "published up to N" to every instance's hub via Redis.

    While Redis is down this skips it (re-trying every `REDIS_RETRY_SECONDS`) instead of
    failing each batch: the NOTIFY the relay also sends wakes every hub's fallback feed."""
    redis = redis_client(redis_url)
    skip_until = float("-inf")

    async def publish(position: int) -> None:
        nonlocal skip_until
        if time.monotonic() < skip_until:
            return
        try:
            await redis.publish(REDIS_STREAM_CHANNEL, str(position))
        except REDIS_DOWN as exc:
            redis_failed("relay_publish", exc)
            skip_until = time.monotonic() + REDIS_RETRY_SECONDS
            return
        redis_ok("relay_publish")

    return publish
