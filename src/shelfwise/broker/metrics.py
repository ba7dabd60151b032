"""Prometheus metrics of the event bus (publisher and inbox consumers)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PUBLISHED = Counter(
    "shelfwise_broker_published_total",
    "Events sent to the broker (including re-sends after a reconnect).",
)
CONFIRMED = Counter(
    "shelfwise_broker_confirmed_total",
    "Events the broker confirmed (basic.ack) and routed to at least one queue.",
)
RETURNED = Counter(
    "shelfwise_broker_returned_total",
    "Events the broker returned as unroutable (no queue bound for the routing key), by type.",
    ["type"],
)
NACKED = Counter(
    "shelfwise_broker_nacked_total",
    "Events the broker refused (basic.nack); they are published again after a backoff.",
)
LAG_POSITIONS = Gauge(
    "shelfwise_broker_lag_positions",
    "Stream positions stamped by the relay but not yet confirmed by the broker.",
)
LAG_SECONDS = Gauge(
    "shelfwise_broker_lag_seconds",
    "Age (since the relay stamped it) of the oldest event not yet confirmed; 0 when none.",
)
CONNECTED = Gauge(
    "shelfwise_broker_connected",
    "1 while the active publisher has a broker connection with confirms (0 on standbys).",
)
PUBLISHER_ACTIVE = Gauge(
    "shelfwise_broker_publisher_active",
    "1 while this process holds the publisher's advisory lock (the sum must be 1).",
)
CONNECTION_FAILURES = Counter(
    "shelfwise_broker_connection_failures_total",
    "Broker connections lost or refused (the publisher backs off with jitter), by side.",
    ["side"],
)
CONSUMED = Counter(
    "shelfwise_broker_consumed_total",
    "Messages handled by inbox consumers, by queue and outcome (processed, duplicate, failed).",
    ["queue", "outcome"],
)
DEAD_LETTERS_REPLAYED = Counter(
    "shelfwise_broker_dead_letters_replayed_total",
    "Dead-lettered messages sent back to their queue, by queue.",
    ["queue"],
)
