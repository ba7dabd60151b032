"""Webhook use cases: subscriptions, fan-out of the event stream, recording attempts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import Conflict, InvalidCursor, NotFound
from shelfwise.events.models import OutboxEvent
from shelfwise.events.payloads import webhook_disabled_event
from shelfwise.jobs.defer import defer_in_transaction, defer_many_in_transaction
from shelfwise.observability.tracing import with_trace
from shelfwise.pagination import PageRequest, PageResult, page_from_rows
from shelfwise.store.unit import unit_of_work
from shelfwise.webhooks.metrics import WEBHOOKS_DISABLED
from shelfwise.webhooks.models import (
    DeliveryStatus,
    SubscriptionStatus,
    WebhookCursor,
    WebhookDelivery,
    WebhookSubscription,
)
from shelfwise.webhooks.sender import Attempt
from shelfwise.webhooks.signing import new_secret

log = structlog.get_logger("shelfwise.webhooks")
DELIVER_TASK = "deliver_webhook"
WILDCARD = "*"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"
    title = "Webhook not found"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"
    title = "Webhook delivery not found"


class WebhookNotActive(Conflict):
    code = "webhook_not_active"
    title = "The webhook is paused or disabled"


async def create_subscription(
    session: AsyncSession, *, url: str, event_types: Sequence[str], description: str = ""
) -> WebhookSubscription:
    sub = WebhookSubscription(
        url=url,
        event_types=sorted(set(event_types)),
        description=description,
        secret=new_secret(),
        status=SubscriptionStatus.ACTIVE.value,
        consecutive_failures=0,
    )
    async with session.begin():
        session.add(sub)
        await session.flush()
        await session.refresh(sub)
    return sub


async def list_subscriptions(session: AsyncSession) -> list[WebhookSubscription]:
    async with session.begin():
        rows = await session.scalars(
            select(WebhookSubscription).order_by(WebhookSubscription.created_at)
        )
        return list(rows.all())


async def _get(
    session: AsyncSession, webhook_id: uuid.UUID, *, lock: bool = False
) -> WebhookSubscription:
    stmt = select(WebhookSubscription).where(WebhookSubscription.id == webhook_id)
    if lock:
        stmt = stmt.with_for_update()
    sub = await session.scalar(stmt)
    if sub is None:
        raise WebhookNotFound(f"No webhook with id {webhook_id}")
    return sub


async def get_subscription(session: AsyncSession, webhook_id: uuid.UUID) -> WebhookSubscription:
    async with session.begin():
        return await _get(session, webhook_id)


async def update_subscription(
    session: AsyncSession,
    webhook_id: uuid.UUID,
    *,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    paused: bool | None = None,
) -> WebhookSubscription:
    async with session.begin():
        sub = await _get(session, webhook_id, lock=True)
        if url is not None:
            sub.url = url
        if event_types is not None:
            sub.event_types = sorted(set(event_types))
        if description is not None:
            sub.description = description
        if paused is True:
            sub.status = SubscriptionStatus.PAUSED.value
        elif paused is False:
            # Resuming also re-enables an automatically disabled subscription.
            sub.status = SubscriptionStatus.ACTIVE.value
            sub.consecutive_failures = 0
            sub.disabled_at = None
        sub.updated_at = func.clock_timestamp()
        await session.flush()
        await session.refresh(sub)
    return sub


async def delete_subscription(session: AsyncSession, webhook_id: uuid.UUID) -> None:
    async with session.begin():
        sub = await _get(session, webhook_id, lock=True)
        await session.delete(sub)  # deliveries cascade; queued jobs find nothing and stop


async def rotate_secret(
    session: AsyncSession, webhook_id: uuid.UUID, *, grace: timedelta, now: datetime
) -> WebhookSubscription:
    """Give the subscription a new secret; the current one keeps signing (as a second
    `v1`) until `now + grace`. A rotation during a window ends the older window: only
    one previous secret is kept."""
    async with session.begin():
        sub = await _get(session, webhook_id, lock=True)
        keep_old = grace > timedelta(0)
        sub.previous_secret = sub.secret if keep_old else None
        sub.previous_secret_expires_at = now + grace if keep_old else None
        sub.secret = new_secret()
        sub.updated_at = func.clock_timestamp()
        await session.flush()
        await session.refresh(sub)
    log.info(
        "webhook_secret_rotated",
        webhook_id=str(webhook_id),
        grace_seconds=int(grace.total_seconds()),
    )
    return sub


def signing_secrets(sub: WebhookSubscription, now: datetime) -> tuple[str, ...]:
    """The secrets a delivery is signed with at `now`: the current one first."""
    expires = sub.previous_secret_expires_at
    if sub.previous_secret and expires is not None and now < expires:
        return (sub.secret, sub.previous_secret)
    return (sub.secret,)


async def list_deliveries(
    session: AsyncSession, webhook_id: uuid.UUID, *, page: PageRequest
) -> PageResult[WebhookDelivery]:
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.subscription_id == webhook_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(page.limit + 1)
    )
    if page.after is not None:
        try:
            stmt = stmt.where(WebhookDelivery.id < int(page.after[0]))
        except (ValueError, IndexError) as exc:
            raise InvalidCursor("The cursor does not fit this list") from exc
    async with session.begin():
        await _get(session, webhook_id)
        rows = (await session.scalars(stmt)).all()
    return page_from_rows(list(rows), page.limit, lambda d: (str(d.id),))


async def redeliver(
    session: AsyncSession, webhook_id: uuid.UUID, delivery_id: int
) -> WebhookDelivery:
    """Send the same body (same event id) again, as a fresh job with a fresh retry budget."""
    async with session.begin():
        sub = await _get(session, webhook_id)
        if sub.status != SubscriptionStatus.ACTIVE:
            raise WebhookNotActive(f"Webhook {webhook_id} is {sub.status}")
        delivery = await session.scalar(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == webhook_id)
            .with_for_update()
        )
        if delivery is None:
            raise DeliveryNotFound(f"No delivery {delivery_id} for webhook {webhook_id}")
        delivery.status = DeliveryStatus.PENDING.value
        delivery.updated_at = func.clock_timestamp()
        await defer_in_transaction(session, DELIVER_TASK, {"delivery_id": delivery_id})
        await session.flush()
        await session.refresh(delivery)
    return delivery


def event_body(event: OutboxEvent) -> str:
    return json.dumps(
        {
            "id": str(event.id),
            "type": event.type,
            "version": event.version,
            "position": event.position,
            "created_at": event.created_at.isoformat(),
            "aggregate": {"type": event.aggregate_type, "id": event.aggregate_id},
            "data": event.payload,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def matches(sub: WebhookSubscription, event_type: str) -> bool:
    return WILDCARD in sub.event_types or event_type in sub.event_types


async def fan_out(session: AsyncSession, *, batch_size: int = 200) -> int:
    """Turn the next published events into delivery rows and jobs, in one transaction.

    The cursor row is locked, so concurrent fan-outs (several workers) take turns; the
    unique (subscription, event) pair is the backstop. Returns how many events were read
    (passed over, when no subscription is active).
    """
    async with session.begin():
        cursor = await session.scalar(
            select(WebhookCursor).where(WebhookCursor.id == 1).with_for_update()
        )
        if cursor is None:  # a database created without the migration's seed row
            cursor = WebhookCursor(id=1, position=0)
            session.add(cursor)
            await session.flush()
        subs = (
            await session.scalars(
                select(WebhookSubscription).where(
                    WebhookSubscription.status == SubscriptionStatus.ACTIVE.value
                )
            )
        ).all()
        if not subs:
            # Nobody to deliver to: move the cursor past everything published so far
            # without loading the events (a bulk import publishes ~2 per CSV row; loading
            # each as an ORM object, 200 a pass, to match no subscription was half the
            # worker's CPU during an import). Positions are dense: the difference is the
            # number of events passed.
            newest = await session.scalar(select(func.max(OutboxEvent.position)))
            if newest is None or newest <= cursor.position:
                return 0
            passed = int(newest) - cursor.position
            cursor.position = int(newest)
            return passed
        events = (
            await session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.position > cursor.position)
                .order_by(OutboxEvent.position)
                .limit(batch_size)
            )
        ).all()
        if not events:
            return 0
        rows = [
            {
                "subscription_id": sub.id,
                "event_id": event.id,
                "event_type": event.type,
                "body": event_body(event),
            }
            for event in events
            for sub in subs
            if matches(sub, event.type)
        ]
        if rows:
            inserted = await session.execute(
                insert(WebhookDelivery)
                .values(rows)
                .on_conflict_do_nothing()
                .returning(WebhookDelivery.id, WebhookDelivery.event_id)
            )
            # Each delivery's job links to the trace its event was written in.
            traces = {event.id: event.trace_context for event in events}
            # One statement for the whole pass, not one per delivery.
            await defer_many_in_transaction(
                session,
                DELIVER_TASK,
                [with_trace({"delivery_id": d}, traces[e]) for d, e in inserted.all()],
            )
        cursor.position = events[-1].position or cursor.position
    return len(events)


@dataclass(frozen=True, slots=True)
class Pending:
    delivery_id: int
    event_id: int
    event_type: str
    body: str
    url: str
    secrets: tuple[str, ...]
    subscription_status: str
    status: str


async def load_pending(session: AsyncSession, delivery_id: int, *, now: datetime) -> Pending | None:
    async with session.begin():
        row = (
            await session.execute(
                select(WebhookDelivery, WebhookSubscription)
                .join(WebhookSubscription)
                .where(WebhookDelivery.id == delivery_id)
            )
        ).first()
    if row is None:
        return None
    delivery, sub = row
    return Pending(
        delivery.id,
        delivery.event_id,
        delivery.event_type,
        delivery.body,
        sub.url,
        signing_secrets(sub, now),
        sub.status,
        delivery.status,
    )


async def cancel_delivery(session: AsyncSession, delivery_id: int, reason: str) -> None:
    async with session.begin():
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                status=DeliveryStatus.CANCELLED.value,
                last_error=reason,
                updated_at=func.clock_timestamp(),
            )
        )


async def record_attempt(
    session: AsyncSession,
    delivery_id: int,
    attempt: Attempt,
    *,
    final: bool,
    disable_after: int,
    now: datetime,
) -> str:
    """Log one attempt; count consecutive failures and disable the subscription at the
    threshold (emitting `webhook.disabled` in the same transaction, through a unit of
    work that wakes the relay after the commit). Returns the status."""
    if attempt.ok:
        status = DeliveryStatus.SUCCEEDED
    elif final or attempt.permanent:
        status = DeliveryStatus.FAILED
    else:
        status = DeliveryStatus.RETRYING
    async with unit_of_work(session) as unit:
        sub_id = await session.scalar(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                status=status.value,
                attempts=WebhookDelivery.attempts + 1,
                response_code=attempt.status_code,
                latency_ms=attempt.latency_ms,
                last_error=attempt.error,
                response_body=attempt.response_body,
                updated_at=func.clock_timestamp(),
                delivered_at=now if attempt.ok else None,
            )
            .returning(WebhookDelivery.subscription_id)
        )
        if sub_id is None:
            return status.value
        if attempt.ok:
            await session.execute(
                update(WebhookSubscription)
                .where(
                    WebhookSubscription.id == sub_id, WebhookSubscription.consecutive_failures > 0
                )
                .values(consecutive_failures=0)
            )
            return status.value
        row = (
            await session.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == sub_id)
                .values(consecutive_failures=WebhookSubscription.consecutive_failures + 1)
                .returning(
                    WebhookSubscription.consecutive_failures,
                    WebhookSubscription.status,
                    WebhookSubscription.url,
                )
            )
        ).one()
        failures, sub_status, url = row
        if failures >= disable_after and sub_status == SubscriptionStatus.ACTIVE:
            await session.execute(
                update(WebhookSubscription)
                .where(WebhookSubscription.id == sub_id)
                .values(
                    status=SubscriptionStatus.DISABLED.value,
                    disabled_at=now,
                    updated_at=func.clock_timestamp(),
                )
            )
            unit.emit(
                webhook_disabled_event(
                    sub_id, url=url, consecutive_failures=failures, last_error=attempt.error
                )
            )
            WEBHOOKS_DISABLED.inc()
            log.error("webhook_disabled", webhook_id=str(sub_id), failures=failures)
    return status.value
