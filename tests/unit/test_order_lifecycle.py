"""The order lifecycle table with no database.

Properties: any sequence of actions on one order either follows the table or is refused
without effect; the stock effects keep every line's level valid; an order that ends
cancelled or expired gives back exactly what it took (the level returns to where it was
before placing), and a fulfilled one takes exactly its quantity out of `on_hand`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.errors import InsufficientStock
from shelfwise.inventory.domain import Counters, MovementKind
from shelfwise.orders.errors import InvalidTransition, ReservationExpired
from shelfwise.orders.lifecycle import TRANSITIONS, OrderAction, OrderStatus, transition

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=15)


def test_the_table_names_each_transitions_movement_and_event() -> None:
    confirm = transition(OrderStatus.RESERVED, OrderAction.CONFIRM, expires_at=LATER, now=NOW)
    assert (confirm.next, confirm.movement_kind, confirm.event_type) == (
        OrderStatus.CONFIRMED,
        MovementKind.COMMIT,
        "order.confirmed",
    )
    restock = transition("confirmed", OrderAction.CANCEL)
    assert restock.movement_kind is MovementKind.RECEIPT
    assert transition("confirmed", OrderAction.FULFIL).movement_kind is None


def test_refusals_name_the_statuses() -> None:
    with pytest.raises(InvalidTransition) as refused:
        transition("fulfilled", OrderAction.CANCEL)
    assert str(refused.value) == "Cannot move an order from fulfilled to cancelled"
    assert refused.value.extra == {"current_status": "fulfilled", "target_status": "cancelled"}


def test_confirming_at_expiry_is_refused_and_expiring_before_it_is_refused() -> None:
    with pytest.raises(ReservationExpired):
        transition("reserved", OrderAction.CONFIRM, expires_at=NOW, now=NOW)
    with pytest.raises(InvalidTransition):
        transition("reserved", OrderAction.EXPIRE, expires_at=LATER, now=NOW)
    assert transition("reserved", OrderAction.EXPIRE, expires_at=NOW, now=NOW).next == "expired"


def test_terminal_statuses_have_no_way_out() -> None:
    for status in (OrderStatus.FULFILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        assert not [action for (current, action) in TRANSITIONS if current is status]


ACTIONS = [a for a in OrderAction if a is not OrderAction.PLACE]


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(1, 10),
    st.lists(st.sampled_from(ACTIONS), max_size=6),
    st.booleans(),
)
def test_any_action_sequence_keeps_the_level_valid_and_conserves_units(
    free: int, reserved: int, quantity: int, actions: list[OrderAction], late: bool
) -> None:
    start = Counters(free + reserved, reserved)
    placing = transition(None, OrderAction.PLACE)
    try:
        placed = placing.apply(start, quantity)
    except InsufficientStock:
        assert quantity > start.available
        return
    assert placed is not None
    level, status = placed.after, placing.next
    now = LATER if late else NOW
    for action in actions:
        try:
            step = transition(status, action, expires_at=LATER, now=now)
        except (InvalidTransition, ReservationExpired):
            continue
        change = step.apply(level, quantity)
        if change is not None:
            assert change.movement.kind is step.movement_kind
            level = change.after
        status = step.next
        assert 0 <= level.reserved <= level.on_hand
    if status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        assert level == start
    elif status is OrderStatus.RESERVED:
        assert level == Counters(start.on_hand, start.reserved + quantity)
    else:  # confirmed or fulfilled: the units left the building
        assert level == Counters(start.on_hand - quantity, start.reserved)
