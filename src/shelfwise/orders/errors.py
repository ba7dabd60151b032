from __future__ import annotations

from shelfwise.errors import Conflict, InvalidInput, NotFound


class OrderNotFound(NotFound):
    code = "order_not_found"
    title = "Order not found"


class InvalidTransition(Conflict):
    code = "invalid_transition"
    title = "The order cannot make this transition from its current status"


class ReservationExpired(Conflict):
    code = "reservation_expired"
    title = "The reservation has expired"


class UnknownProducts(InvalidInput):
    code = "unknown_product"
    title = "The order names products that do not exist"


class MixedCurrencies(InvalidInput):
    code = "mixed_currencies"
    title = "All products of an order must share one currency"
