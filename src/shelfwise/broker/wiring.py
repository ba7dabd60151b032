"""The publisher as the worker runs it, built from settings (None when no broker is set)."""

from __future__ import annotations

import random

from shelfwise.broker.publisher import BrokerPublisher, PublisherConfig
from shelfwise.config import Settings
from shelfwise.db import libpq_url
from shelfwise.jobs.alerts import Alerts


def publisher_from_settings(
    settings: Settings,
    database_url: str,
    *,
    name: str,
    alerts: Alerts,
    rng: random.Random | None = None,
) -> BrokerPublisher | None:
    if not settings.broker_url:
        return None
    config = PublisherConfig(
        exchange=settings.broker_exchange,
        batch_size=settings.broker_batch_size,
        window=settings.broker_window,
        poll_interval=settings.broker_poll_seconds,
        linger=settings.broker_publisher_linger_ms / 1000,
        backoff_max=settings.broker_backoff_max_seconds,
    )
    return BrokerPublisher(
        libpq_url(database_url),
        settings.broker_url,
        config,
        name=name,
        alerts=alerts,
        rng=rng,
    )
