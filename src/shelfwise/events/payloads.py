"""Event payloads (version 1): each type's payload is built here and nowhere else.

The list of types is `events/types.py` (re-exported here); the catalog for readers is
docs/events.md. Builders take values the use case already holds (RETURNING'd rows,
locked levels, loaded orders), so emitting costs no re-read.

Set-based writers (the CSV import's merge: `catalog/store.py`, `inventory/store.py`)
write a million events in one statement per batch and cannot call a Python builder per
row. For them `product_payload_sql` / `stock_changed_payload_sql` derive the payload's
`jsonb_build_object` from the same key list the Python builder uses (`PRODUCT_KEYS`,
`STOCK_CHANGED_KEYS`): a key added here reaches both, and a key the SQL side does not
map is refused when the statement is built. tests/integration/test_import_copy.py
compares both builders' payloads for the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from shelfwise.catalog.models import Product
from shelfwise.events.outbox import Event
from shelfwise.events.types import EventType as EventType  # the list lives in events/types.py


def jsonb_object_sql(keys: tuple[str, ...], columns: Mapping[str, str]) -> str:
    """`jsonb_build_object(...)` with `keys` in this order, each from `columns[key]` (an
    SQL expression); refuses a mapping that misses a key or names one the payload lacks."""
    if set(columns) != set(keys):
        raise ValueError(f"payload keys {sorted(keys)} != SQL columns {sorted(columns)}")
    return "jsonb_build_object(" + ", ".join(f"'{k}', {columns[k]}" for k in keys) + ")"


STOCK_CHANGED_KEYS = (
    "stock_level_id",
    "product_id",
    "location_id",
    "on_hand",
    "reserved",
    "available",
    "level_version",
    "cause",
    "reference",
)


def stock_changed_payload_sql(columns: Mapping[str, str]) -> str:
    """`stock.changed`'s payload as SQL, for writers of many levels in one statement."""
    return jsonb_object_sql(STOCK_CHANGED_KEYS, columns)


def stock_changed_event(
    *,
    stock_level_id: int,
    product_id: uuid.UUID,
    location_id: uuid.UUID,
    on_hand: int,
    reserved: int,
    level_version: int,
    cause: str,
    reference: str | None,
) -> Event:
    """`stock.changed` for a level's counters as the writing transaction leaves them
    (the only builder of this payload; `inventory/store.py` calls it, and derives its
    set-based twin from `STOCK_CHANGED_KEYS`)."""
    values = (
        stock_level_id,
        str(product_id),
        str(location_id),
        on_hand,
        reserved,
        on_hand - reserved,
        level_version,
        cause,
        reference,
    )
    payload = dict(zip(STOCK_CHANGED_KEYS, values, strict=True))
    return Event(EventType.STOCK_CHANGED.value, "stock_level", str(stock_level_id), payload)


def stock_low_event(
    *,
    stock_level_id: int,
    product_id: uuid.UUID,
    location_id: uuid.UUID,
    on_hand: int,
    reserved: int,
    threshold: int,
) -> Event:
    """`stock.low` for a level whose available quantity is under `threshold` (the only
    builder of this payload; `inventory/low_stock.py` calls it)."""
    payload = {
        "stock_level_id": stock_level_id,
        "product_id": str(product_id),
        "location_id": str(location_id),
        "on_hand": on_hand,
        "reserved": reserved,
        "available": on_hand - reserved,
        "threshold": threshold,
    }
    return Event(EventType.STOCK_LOW.value, "stock_level", str(stock_level_id), payload)


def order_payload(
    order_id: uuid.UUID,
    status: str,
    *,
    currency: str,
    total_minor: int,
    expires_at: datetime,
    lines: Iterable[tuple[uuid.UUID, uuid.UUID, int]],
    placed_by_user_id: uuid.UUID | None = None,
    placed_by_api_key_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    return {
        "order_id": str(order_id),
        "status": status,
        # Who owns the order: the live `orders` channel shows customers only their own.
        "placed_by_user_id": str(placed_by_user_id) if placed_by_user_id else None,
        "placed_by_api_key_id": str(placed_by_api_key_id) if placed_by_api_key_id else None,
        "currency": currency,
        "total_minor": total_minor,
        "expires_at": expires_at.isoformat(),
        "lines": [
            {"product_id": str(p), "location_id": str(loc), "quantity": q} for p, loc, q in lines
        ],
    }


class OrderFacts(Protocol):
    """What an `order.*` event says about an order: an `Order`, a RETURNING row, a
    just-placed order."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def status(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def total_minor(self) -> int: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def placed_by_user_id(self) -> uuid.UUID | None: ...
    @property
    def placed_by_api_key_id(self) -> uuid.UUID | None: ...


class LineFacts(Protocol):
    @property
    def product_id(self) -> uuid.UUID: ...
    @property
    def location_id(self) -> uuid.UUID: ...
    @property
    def quantity(self) -> int: ...


def order_event(order: OrderFacts, lines: Iterable[LineFacts]) -> Event:
    """`order.<status>` for an order and its lines."""
    payload = order_payload(
        order.id,
        order.status,
        currency=order.currency,
        total_minor=order.total_minor,
        expires_at=order.expires_at,
        lines=[(line.product_id, line.location_id, line.quantity) for line in lines],
        placed_by_user_id=order.placed_by_user_id,
        placed_by_api_key_id=order.placed_by_api_key_id,
    )
    return Event(f"order.{order.status}", "order", str(order.id), payload)


PRODUCT_KEYS = (
    "product_id",
    "sku",
    "name",
    "description",
    "category",
    "price_minor",
    "currency",
    "version",
)


def product_payload(product: Product) -> dict[str, Any]:
    values = (
        str(product.id),
        product.sku,
        product.name,
        product.description,
        product.category,
        product.price_minor,
        product.currency,
        product.version,
    )
    return dict(zip(PRODUCT_KEYS, values, strict=True))


def product_payload_sql(columns: Mapping[str, str]) -> str:
    """`product.created` / `product.updated`'s payload as SQL (the import's upsert)."""
    return jsonb_object_sql(PRODUCT_KEYS, columns)


def product_event(product: Product, type_: EventType) -> Event:
    return Event(type_.value, "product", str(product.id), product_payload(product))


def product_deleted(product_id: uuid.UUID) -> Event:
    return Event(
        EventType.PRODUCT_DELETED.value, "product", str(product_id), {"product_id": str(product_id)}
    )


def webhook_disabled_event(
    webhook_id: uuid.UUID, *, url: str, consecutive_failures: int, last_error: str | None
) -> Event:
    """`webhook.disabled`: a subscription stopped after too many failed deliveries."""
    payload = {
        "webhook_id": str(webhook_id),
        "url": url,
        "consecutive_failures": consecutive_failures,
        "last_error": last_error,
    }
    return Event(EventType.WEBHOOK_DISABLED.value, "webhook", str(webhook_id), payload)
