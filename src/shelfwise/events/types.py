"""Every event type Shelfwise writes, and the check every outbox writer makes.

One list (`EventType`, documented in docs/events.md) and one check (`require_known`),
called by the one way an event reaches the outbox from Python: the unit of work's `emit`
(`store/unit.py`). A type that
is not listed is a programming error: it would be written and then reach no consumer
(no live channel, no webhook subscription names it), so it fails the transaction instead.
No dependencies, so the writer (and `events/payloads.py`) can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class EventType(StrEnum):
    """Every event type Shelfwise writes (docs/events.md). Add a type here first, then its
    payload builder in `events/payloads.py` and its live routing in `live/channels.py`."""

    STOCK_CHANGED = "stock.changed"
    STOCK_LOW = "stock.low"
    ORDER_RESERVED = "order.reserved"
    ORDER_CONFIRMED = "order.confirmed"
    ORDER_CANCELLED = "order.cancelled"
    ORDER_FULFILLED = "order.fulfilled"
    ORDER_EXPIRED = "order.expired"
    PRODUCT_CREATED = "product.created"
    PRODUCT_UPDATED = "product.updated"
    PRODUCT_DELETED = "product.deleted"
    IMPORT_PROGRESS = "import.progress"
    WEBHOOK_DISABLED = "webhook.disabled"


KNOWN_EVENT_TYPES: frozenset[str] = frozenset(t.value for t in EventType)


class UnknownEventType(ValueError):
    """An event type missing from `EventType` (and docs/events.md): a programming error."""


def require_known(types: Iterable[str]) -> None:
    """Refuse the first type that is not an `EventType`, before anything is written."""
    for type_ in types:
        if type_ not in KNOWN_EVENT_TYPES:
            raise UnknownEventType(f"{type_!r} is not an EventType (events/types.py)")
