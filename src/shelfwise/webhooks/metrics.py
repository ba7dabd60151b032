"""Webhook metrics (registered on the process-wide Prometheus registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WEBHOOK_DELIVERIES = Counter(
    "shelfwise_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (succeeded, retrying, failed, refused, cancelled).",
    ["outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "shelfwise_webhook_delivery_seconds",
    "Time of one webhook HTTP attempt, connect to the capped end of the response.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
WEBHOOKS_DISABLED = Counter(
    "shelfwise_webhooks_disabled_total",
    "Subscriptions disabled automatically after too many consecutive failures.",
)
