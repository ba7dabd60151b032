"""Channels a live client can subscribe to, who may, and which events each one carries.

- `stock`                — every stock level change (`stock.changed`, `stock.low`);
- `stock:<product_id>`   — one product's levels;
- `orders`               — order events: a customer sees only their own orders, a caller
                           with `orders:manage` sees every order;
- `imports:<job_id>`     — progress of one CSV import (`import.progress`).

Authorization is checked on subscribe (a refused channel is a clear error, not a silent
empty stream) and per event for `orders` (ownership is a property of each order).

Which channel carries an event is one table, `CARRIED_BY`, with a row for every
`EventType` (a unit test keeps it complete), so adding a type means deciding here
whether live clients see it. A type with no row is not guessed from its prefix and not
dropped in silence: it is logged once per type and counted
(`shelfwise_live_unknown_events_total`), and not delivered. It is not raised either:
the event is committed and stamped already, and an exception in the hub's fan-out would
cut every stream at that position, again on each resume. Writers are where an unknown
type is refused (`events/types.py`); this is the reader's alarm for one that got past.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

import structlog

from shelfwise.errors import InvalidInput, PermissionDenied
from shelfwise.events.outbox import PublishedEvent
from shelfwise.events.types import EventType
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import Scope
from shelfwise.observability.metrics import LIVE_UNKNOWN_EVENTS

log = structlog.get_logger("shelfwise.live")
MAX_CHANNELS = 50

Carrier = Literal["stock", "orders", "imports"]
# The live channel that carries each event type; None: no live channel does.
CARRIED_BY: Final[dict[str, Carrier | None]] = {
    EventType.STOCK_CHANGED: "stock",
    EventType.STOCK_LOW: "stock",
    EventType.ORDER_RESERVED: "orders",
    EventType.ORDER_CONFIRMED: "orders",
    EventType.ORDER_CANCELLED: "orders",
    EventType.ORDER_FULFILLED: "orders",
    EventType.ORDER_EXPIRED: "orders",
    EventType.IMPORT_PROGRESS: "imports",
    # Catalog changes reach the product cache and webhooks, not live clients.
    EventType.PRODUCT_CREATED: None,
    EventType.PRODUCT_UPDATED: None,
    EventType.PRODUCT_DELETED: None,
    # An operator's matter: webhook subscribers and the logs hear of it, not live clients.
    EventType.WEBHOOK_DISABLED: None,
}
_UNKNOWN: Final = "unknown"
_REPORTED_LIMIT = 100  # distinct unknown types logged per process: a bound, not a target
_reported: set[str] = set()


class UnknownChannel(InvalidInput):
    code = "unknown_channel"
    title = "Unknown channel"


@dataclass(frozen=True, slots=True)
class ChannelSet:
    stock: bool = False
    products: frozenset[str] = field(default_factory=frozenset)
    orders: bool = False
    imports: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return not (self.stock or self.products or self.orders or self.imports)

    def names(self) -> list[str]:
        return sorted(
            (["stock"] if self.stock else [])
            + [f"stock:{p}" for p in self.products]
            + (["orders"] if self.orders else [])
            + [f"imports:{j}" for j in self.imports]
        )

    def union(self, other: ChannelSet) -> ChannelSet:
        return ChannelSet(
            self.stock or other.stock,
            self.products | other.products,
            self.orders or other.orders,
            self.imports | other.imports,
        )

    def minus(self, other: ChannelSet) -> ChannelSet:
        return ChannelSet(
            self.stock and not other.stock,
            self.products - other.products,
            self.orders and not other.orders,
            self.imports - other.imports,
        )


def _uuid(kind: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise UnknownChannel(f"{kind} channel needs a UUID, got {value!r}") from exc


def parse_channels(raw: Iterable[str]) -> ChannelSet:
    names = [n.strip() for part in raw for n in part.split(",") if n.strip()]
    if not names:
        raise UnknownChannel(
            "Name at least one channel: stock, stock:<product_id>, orders, imports:<job_id>"
        )
    if len(names) > MAX_CHANNELS:
        raise UnknownChannel(f"At most {MAX_CHANNELS} channels per connection")
    stock, orders = False, False
    products: set[str] = set()
    imports: set[str] = set()
    for name in names:
        kind, _, arg = name.partition(":")
        if name == "stock":
            stock = True
        elif name == "orders":
            orders = True
        elif kind == "stock" and arg:
            products.add(_uuid("stock", arg))
        elif kind == "imports" and arg:
            imports.add(arg if arg.isdigit() else _uuid("imports", arg))
        else:
            raise UnknownChannel(f"Unknown channel {name!r}")
    return ChannelSet(stock, frozenset(products), orders, frozenset(imports))


def authorize(channels: ChannelSet, principal: Principal) -> None:
    if (channels.stock or channels.products) and Scope.STOCK_READ not in principal.scopes:
        raise PermissionDenied("The stock channels need the 'stock:read' scope")
    if channels.orders and Scope.ORDERS_READ not in principal.scopes:
        raise PermissionDenied("The orders channel needs the 'orders:read' scope")
    if channels.imports and Scope.CATALOG_WRITE not in principal.scopes:
        raise PermissionDenied("Import progress needs the 'catalog:write' scope")


def _owns(event: PublishedEvent, principal: Principal) -> bool:
    if Scope.ORDERS_MANAGE in principal.scopes:
        return True
    payload = event.payload
    if principal.kind is PrincipalKind.API_KEY:
        return payload.get("placed_by_api_key_id") == str(principal.id)
    return payload.get("placed_by_user_id") == str(principal.id)


def _unknown_type(event: PublishedEvent) -> None:
    LIVE_UNKNOWN_EVENTS.inc()
    if event.type not in _reported and len(_reported) < _REPORTED_LIMIT:
        _reported.add(event.type)
        log.error(
            "live_unknown_event_type",
            event_type=event.type,
            position=event.position,
            hint="add it to EventType (events/types.py) and to CARRIED_BY (live/channels.py)",
        )


def matches(channels: ChannelSet, event: PublishedEvent, principal: Principal) -> bool:
    carrier = CARRIED_BY.get(event.type, _UNKNOWN)
    if carrier == "stock":
        return channels.stock or str(event.payload.get("product_id")) in channels.products
    if carrier == "orders":
        return channels.orders and _owns(event, principal)
    if carrier == "imports":
        return str(event.payload.get("job_id")) in channels.imports
    if carrier == _UNKNOWN:
        _unknown_type(event)
    return False
