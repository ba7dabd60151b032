"""The order lifecycle as one table, with no I/O.

    status x action → next status, the stock effect on every line, the ledger kind, the event

`TRANSITIONS` is the whole rule: `orders/store.py` locks the order and its levels, asks
`transition()` what may happen, applies `Transition.effect` to each line's counters
(`inventory/domain.py`) and writes the result. A pair missing from the table is an
`InvalidTransition`; confirming at or after `expires_at` is a `ReservationExpired`.

    (placed) ──place──▶ reserved ──confirm──▶ confirmed ──fulfil──▶ fulfilled
                           │  ╲                  │
                        cancel expire         cancel (restock)
                           ▼    ▼                ▼
                     cancelled  expired      cancelled
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shelfwise.inventory import domain
from shelfwise.inventory.domain import Counters, MovementKind, StockChange
from shelfwise.orders.errors import InvalidTransition, ReservationExpired


class OrderStatus(StrEnum):
    RESERVED = "reserved"
    CONFIRMED = "confirmed"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class OrderAction(StrEnum):
    PLACE = "place"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    FULFIL = "fulfil"
    EXPIRE = "expire"


# What an action is called when it is refused ("cannot move an order from X to <target>").
TARGET: Mapping[OrderAction, OrderStatus] = {
    OrderAction.PLACE: OrderStatus.RESERVED,
    OrderAction.CONFIRM: OrderStatus.CONFIRMED,
    OrderAction.CANCEL: OrderStatus.CANCELLED,
    OrderAction.FULFIL: OrderStatus.FULFILLED,
    OrderAction.EXPIRE: OrderStatus.EXPIRED,
}

StockEffect = Callable[[Counters, int], StockChange]


@dataclass(frozen=True, slots=True)
class Transition:
    next: OrderStatus
    effect: StockEffect | None  # applied to each line's level with the line's quantity
    reason: str  # the ledger rows' `reason`

    @property
    def event_type(self) -> str:
        return f"order.{self.next.value}"

    @property
    def movement_kind(self) -> MovementKind | None:
        return _KINDS[self.effect] if self.effect is not None else None

    def apply(self, level: Counters, quantity: int) -> StockChange | None:
        return self.effect(level, quantity) if self.effect is not None else None


_KINDS: dict[StockEffect, MovementKind] = {
    domain.reserve: MovementKind.RESERVE,
    domain.release: MovementKind.RELEASE,
    domain.commit: MovementKind.COMMIT,
    domain.restock: MovementKind.RECEIPT,
}

# None: the order does not exist yet.
TRANSITIONS: Mapping[tuple[OrderStatus | None, OrderAction], Transition] = {
    (None, OrderAction.PLACE): Transition(OrderStatus.RESERVED, domain.reserve, "order reserved"),
    (OrderStatus.RESERVED, OrderAction.CONFIRM): Transition(
        OrderStatus.CONFIRMED, domain.commit, "order confirmed"
    ),
    (OrderStatus.RESERVED, OrderAction.CANCEL): Transition(
        OrderStatus.CANCELLED, domain.release, "order cancelled"
    ),
    (OrderStatus.CONFIRMED, OrderAction.CANCEL): Transition(
        OrderStatus.CANCELLED, domain.restock, "restock: confirmed order cancelled"
    ),
    (OrderStatus.CONFIRMED, OrderAction.FULFIL): Transition(
        OrderStatus.FULFILLED, None, "order fulfilled"
    ),
    (OrderStatus.RESERVED, OrderAction.EXPIRE): Transition(
        OrderStatus.EXPIRED, domain.release, "reservation expired"
    ),
}


def transition(
    status: OrderStatus | str | None,
    action: OrderAction,
    *,
    expires_at: datetime | None = None,
    now: datetime | None = None,
) -> Transition:
    """The transition `action` makes from `status`, or the refusal.

    A reservation is confirmable strictly before `expires_at`; expiry applies from
    `expires_at` on, so the two can never both succeed for one order.
    """
    current = OrderStatus(status) if status is not None else None
    found = TRANSITIONS.get((current, action))
    if found is None:
        raise InvalidTransition(
            f"Cannot move an order from {current} to {TARGET[action].value}",
            current_status=current.value if current else None,
            target_status=TARGET[action].value,
        )
    if action in (OrderAction.CONFIRM, OrderAction.EXPIRE) and expires_at and now:
        due = expires_at <= now
        if action is OrderAction.CONFIRM and due:
            raise ReservationExpired(
                "The reservation expired; place the order again",
                expired_at=expires_at.isoformat(),
            )
        if action is OrderAction.EXPIRE and not due:
            raise InvalidTransition(
                "The reservation has not expired yet",
                current_status=current.value if current else None,
                target_status=TARGET[action].value,
            )
    return found
