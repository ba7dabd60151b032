"""Webhook jobs: `deliver_webhook` (one delivery, retried for about a day) and the fan-out
loop the worker runs next to the relay."""

from __future__ import annotations

import asyncio
import json

import structlog
from procrastinate import JobContext

from shelfwise.config import Settings
from shelfwise.db import Database
from shelfwise.events.relay import AfterPublish
from shelfwise.jobs.registry import task
from shelfwise.jobs.retry import Backoff
from shelfwise.jobs.runtime import runtime_of
from shelfwise.observability import tracing
from shelfwise.webhooks import service
from shelfwise.webhooks.metrics import WEBHOOK_DELIVERIES, WEBHOOK_LATENCY
from shelfwise.webhooks.models import DeliveryStatus, SubscriptionStatus
from shelfwise.webhooks.sender import send
from shelfwise.webhooks.ssrf import parse_networks

log = structlog.get_logger("shelfwise.webhooks.tasks")
WEBHOOKS = "webhooks"
# Waits (before jitter) 60 s, 2, 4, 8, 16, 32, 64 min, then 2 h x 13: the 20th and last
# attempt comes about 21 h (jitter: between 14 and 28 h) after the first.
DELIVERY_BACKOFF = Backoff(attempts=20, base_seconds=60, cap_seconds=7200)


class DeliveryFailed(Exception):
    """Raised so Procrastinate retries the job with `DELIVERY_BACKOFF`."""


@task(service.DELIVER_TASK, queue=WEBHOOKS, backoff=DELIVERY_BACKOFF)
async def deliver_webhook(context: JobContext, delivery_id: int) -> str:
    rt = runtime_of(context)
    async with rt.db.sessions() as session:
        pending = await service.load_pending(session, delivery_id, now=rt.clock.now())
    if pending is None:
        return "gone"  # the subscription was deleted
    if pending.status not in (DeliveryStatus.PENDING, DeliveryStatus.RETRYING):
        return pending.status  # a duplicate job: already settled
    if pending.subscription_status != SubscriptionStatus.ACTIVE:
        async with rt.db.sessions() as session:
            await service.cancel_delivery(
                session, delivery_id, f"webhook {pending.subscription_status}"
            )
        WEBHOOK_DELIVERIES.labels("cancelled").inc()
        return DeliveryStatus.CANCELLED.value
    if tracing.enabled():  # what this job's span is about: the event and its aggregate
        aggregate = json.loads(pending.body)["aggregate"]
        tracing.annotate(
            {
                tracing.EVENT_TYPE: pending.event_type,
                tracing.AGGREGATE_TYPE: aggregate["type"],
                tracing.AGGREGATE_ID: aggregate["id"],
            }
        )
    settings = rt.settings
    attempt = await send(
        pending.url,
        pending.body.encode(),
        event_id=str(pending.event_id),
        event_type=pending.event_type,
        secrets=pending.secrets,
        timestamp=int(rt.clock.now().timestamp()),
        allowed=parse_networks(settings.webhook_allowed_networks),
        connect_timeout=settings.webhook_connect_timeout_seconds,
        read_timeout=settings.webhook_read_timeout_seconds,
    )
    WEBHOOK_LATENCY.observe(attempt.latency_ms / 1000)
    final = context.job.attempts + 1 >= DELIVERY_BACKOFF.attempts
    async with rt.db.sessions() as session:
        status = await service.record_attempt(
            session,
            delivery_id,
            attempt,
            final=final,
            disable_after=settings.webhook_disable_after_failures,
            now=rt.clock.now(),
        )
    WEBHOOK_DELIVERIES.labels("refused" if attempt.permanent else status).inc()
    if status == DeliveryStatus.RETRYING:
        raise DeliveryFailed(attempt.error or "delivery failed")
    # `failed` ends the job normally: the receiver's outage is in the delivery log and
    # the subscription's failure count, not a dead letter of ours.
    return status


class FanoutWake:
    """Set by the relay's after-publish hook when the relay runs in the same process
    (`shelfwise worker` runs both), so the fan-out starts as soon as events are published
    instead of at its next poll. A lost wake-up only costs one poll interval."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def after_publish(self, then: AfterPublish | None = None) -> AfterPublish:
        """The relay hook: wake the fan-out first (it cannot fail), then `then`."""

        async def published(position: int) -> None:
            self._event.set()
            if then is not None:
                await then(position)

        return published

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, stop: asyncio.Event, poll_seconds: float) -> None:
        """Until a wake-up, `stop`, or `poll_seconds` (the poll, a safety net)."""
        waiters = [asyncio.create_task(self._event.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


async def run_fanout(
    db: Database, settings: Settings, stop: asyncio.Event, wake: FanoutWake | None = None
) -> None:
    """Fan the published stream out to deliveries until `stop` (in `shelfwise worker`)."""
    wake = wake or FanoutWake()
    while not stop.is_set():
        wake.clear()  # a publish from here on wakes the next wait
        try:
            async with db.sessions() as session:
                read = await service.fan_out(session, batch_size=settings.webhook_fanout_batch_size)
        except Exception as exc:  # a database hiccup: try again after the poll interval
            log.warning("webhook_fanout_failed", error=type(exc).__name__)
            read = 0
        if read < settings.webhook_fanout_batch_size:
            await wake.wait(stop, settings.webhook_fanout_poll_seconds)
