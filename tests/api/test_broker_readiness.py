"""`/readyz` reports the event bus from the publisher's row, and never fails because of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Settings


@pytest.fixture
async def broker_client(settings: Settings, clock: FixedClock) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(update={"broker_url": "amqp://shelfwise:x@127.0.0.1:9/"})
    application: Any = create_app(configured, clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://t.test") as client:
            yield client


async def test_readiness_reports_the_publisher_but_stays_ready(
    broker_client: httpx.AsyncClient, database_url: str
) -> None:
    response = await broker_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["broker"].startswith("degraded: no publisher")

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload, position)"
            " VALUES ('order.reserved', 'order', '1', '{}', 1)"
        )
        conn.execute(
            "INSERT INTO broker_publisher_positions (exchange, connected, last_error)"
            " VALUES ('shelfwise.events', false, 'AMQPConnectionError: refused')"
        )
    response = await broker_client.get("/readyz")
    assert response.status_code == 200
    detail = response.json()["checks"]["broker"]
    assert "disconnected since" in detail
    assert "refused; 1 waiting" in detail

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE broker_publisher_positions SET connected = true, position = 1")
    response = await broker_client.get("/readyz")
    assert response.json()["checks"]["broker"] == "ok"
