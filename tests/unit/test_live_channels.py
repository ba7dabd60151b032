"""Which live channel carries each event type: one table for every `EventType`, and an
unknown type is counted and logged, not routed by its prefix nor dropped in silence."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from shelfwise.events.outbox import PublishedEvent
from shelfwise.events.types import EventType
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES
from shelfwise.live.channels import CARRIED_BY, matches, parse_channels

ADMIN = Principal(PrincipalKind.USER, uuid.uuid4(), ROLE_SCOPES[Role.ADMIN], Role.ADMIN)
PRODUCT = str(uuid.uuid4())
EVERYTHING = parse_channels(["stock", f"stock:{PRODUCT}", "orders", "imports:7"])


def event(type_: str, position: int = 1) -> PublishedEvent:
    return PublishedEvent(
        position=position,
        id=position,
        type=type_,
        aggregate_type="x",
        aggregate_id="1",
        payload={"product_id": PRODUCT, "job_id": 7},
        version=1,
        created_at=datetime.now(UTC),
        published_at=None,
    )


def unknown_count() -> float:
    return REGISTRY.get_sample_value("shelfwise_live_unknown_events_total") or 0.0


def test_every_event_type_has_a_row() -> None:
    # A new EventType fails here until someone decides whether live clients see it.
    assert set(CARRIED_BY) == set(EventType)


def test_each_carried_type_reaches_its_channel_and_the_others_none() -> None:
    before = unknown_count()
    delivered = {t.value for t in EventType if matches(EVERYTHING, event(t.value), ADMIN)}
    assert delivered == {t for t, carrier in CARRIED_BY.items() if carrier is not None}
    assert "product.updated" not in delivered
    assert "webhook.disabled" not in delivered
    assert unknown_count() == before  # a known type without a channel is no alarm


def test_an_unknown_type_is_counted_and_logged_once_not_delivered() -> None:
    # "stock." on purpose: a name is not routed to the stock channels by its prefix.
    # Unique per run: each type is logged once per process.
    name = f"stock.vanished_{uuid.uuid4().hex[:8]}"
    before = unknown_count()
    with capture_logs() as logs:
        delivered = [matches(EVERYTHING, event(name, position), ADMIN) for position in (1, 2)]
    assert delivered == [False, False]
    assert unknown_count() == before + 2
    reported = [e for e in logs if e["event"] == "live_unknown_event_type"]
    assert [(e["event_type"], e["log_level"]) for e in reported] == [(name, "error")]
