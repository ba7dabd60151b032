"""Channels a live client can subscribe to, who may, and which events each one carries.

- `stock`                — every stock level change (`stock.changed`, `stock.low`);
- `stock:<product_id>`   — one product's levels;
- `orders`               — order events: a customer sees only their own orders, a caller
                           with `orders:manage` sees every order;
- `imports:<job_id>`     — progress of one CSV import (`import.progress`).

Authorization is checked on subscribe (a refused channel is a clear error, not a silent
empty stream) and per event for `orders` (ownership is a property of each order).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from shelfwise.errors import InvalidInput, PermissionDenied
from shelfwise.events.outbox import PublishedEvent
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import Scope

MAX_CHANNELS = 50


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


def matches(channels: ChannelSet, event: PublishedEvent, principal: Principal) -> bool:
    kind = event.type.partition(".")[0]
    if kind == "stock":
        return channels.stock or str(event.payload.get("product_id")) in channels.products
    if kind == "order":
        return channels.orders and _owns(event, principal)
    if event.type == "import.progress":
        return str(event.payload.get("job_id")) in channels.imports
    return False
