"""webhook-receiver-down: a subscriber's endpoint refuses connections; deliveries retry
with backoff, the delivery log records each try, and the subscription is disabled."""

from __future__ import annotations

import socket

from sqlalchemy import text

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.job_support import drain, job_app
from shelfwise.drills.outbox_support import emit_product_updates, publish_all
from shelfwise.drills.system import DrillSystem
from shelfwise.events.types import EventType
from shelfwise.webhooks import service
from shelfwise.webhooks.tasks import WEBHOOKS

DELIVERIES_SQL = text(
    "SELECT status, attempts, last_error FROM webhook_deliveries "
    "WHERE subscription_id = :id ORDER BY id"
)


def closed_port() -> int:
    """A local port nobody listens on: connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run(system: DrillSystem, quick: bool) -> Outcome:
    disable_after = 3 if quick else 10
    disabled = metric("shelfwise_webhooks_disabled_total")
    retried = metric("shelfwise_webhook_deliveries_total", outcome="retrying")
    async with system.ctx.db.sessions() as session:
        sub = await service.create_subscription(
            session,
            url=f"http://127.0.0.1:{closed_port()}/hook",
            event_types=[EventType.PRODUCT_UPDATED.value],
        )
    await emit_product_updates(system, 1)
    await publish_all(system)
    async with system.ctx.db.sessions() as session:
        await service.fan_out(session)
    overrides = {
        "webhook_allowed_networks": ["127.0.0.1/32"],
        "webhook_disable_after_failures": disable_after,
        "webhook_connect_timeout_seconds": 1.0,
    }
    async with job_app(system, **overrides) as (app, runtime):
        # Retries come due at once (the drill's clock stands a day back); the worker
        # gives up when the subscription is disabled.
        await drain(app, runtime, "drill-webhooks", [WEBHOOKS])
    async with system.ctx.db.sessions() as session:
        after = await service.get_subscription(session, sub.id)
    async with system.ctx.db.sessions() as session:
        rows = (await session.execute(DELIVERIES_SQL, {"id": sub.id})).all()
    moved = metric("shelfwise_webhooks_disabled_total") - disabled
    retrying = metric("shelfwise_webhook_deliveries_total", outcome="retrying") - retried
    return Outcome(
        signal="the subscription disabled after consecutive failures",
        seen=bool(rows)
        and rows[0][1] >= disable_after
        and retrying >= disable_after - 1
        and after.status == "disabled",
        evidence={
            "delivery (status, attempts, last_error)": tuple(rows[0]) if rows else None,
            "subscription status / consecutive_failures": (
                f"{after.status} / {after.consecutive_failures}"
            ),
            'shelfwise_webhook_deliveries_total{outcome="retrying"} (delta)': retrying,
            "shelfwise_webhooks_disabled_total (delta)": moved,
        },
        look_at=[
            "GET /v1/webhooks/{id}/deliveries: status, attempts, last_error per delivery",
            'shelfwise_webhook_deliveries_total{outcome="retrying"} rising, '
            "histogram shelfwise_webhook_delivery_seconds",
            "counter shelfwise_webhooks_disabled_total and the webhook.disabled event "
            "(alert: webhook endpoint auto-disabled)",
        ],
        fix="the receiver comes back, the admin re-enables the subscription "
        "(PATCH status=active) and redelivers the failed deliveries "
        "(POST /v1/webhooks/{id}/deliveries/{delivery}/redeliver)",
    )


DRILL = Drill("webhook-receiver-down", "retries with backoff, delivery log, auto-disable", run)
