"""The stock rules with no database: examples, then Hypothesis properties on the pure model.

Properties:
- whatever sequence of operations is tried, every accepted one leaves 0 <= reserved <= on_hand,
  and the sum of the ledger movements equals the counters (a level starts at 0/0);
- a refused operation changes nothing (it raises; no counters come back);
- every operation with an inverse is undone by it: receive/adjust(-q), reserve/release,
  transfer there and back.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shelfwise.errors import InsufficientStock, InvalidInput
from shelfwise.inventory import domain
from shelfwise.inventory.domain import Counters, MovementKind, StockChange

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)


def test_reserve_refuses_more_than_available() -> None:
    with pytest.raises(InsufficientStock) as refused:
        domain.reserve(Counters(on_hand=5, reserved=3), 3)
    assert refused.value.extra["lines"] == [{"requested": 3, "available": 2}]


def test_commit_drops_both_counters_and_records_one_movement() -> None:
    change = domain.commit(Counters(10, 4), 3)
    assert change.after == Counters(7, 1)
    assert change.movement.kind is MovementKind.COMMIT
    assert (change.movement.on_hand_delta, change.movement.reserved_delta) == (-3, -3)
    assert change.event.counters == change.after
    assert change.event.cause == "commit"


def test_adjust_cannot_take_reserved_units() -> None:
    with pytest.raises(InsufficientStock, match="only 2 are not reserved"):
        domain.adjust(Counters(5, 3), -3)
    assert domain.adjust(Counters(5, 3), -2).after == Counters(3, 3)


@pytest.mark.parametrize("quantity", [0, -1])
def test_quantities_must_be_positive(quantity: int) -> None:
    with pytest.raises(InvalidInput):
        domain.reserve(Counters(5, 0), quantity)


def test_transfer_moves_only_unreserved_units() -> None:
    out, into = domain.transfer(Counters(5, 2), Counters(1, 0), 3)
    assert (out.after, into.after) == (Counters(2, 2), Counters(4, 0))
    assert (out.movement.kind, into.movement.kind) == (
        MovementKind.TRANSFER_OUT,
        MovementKind.TRANSFER_IN,
    )
    with pytest.raises(InsufficientStock):
        domain.transfer(Counters(5, 2), Counters(0, 0), 4)


def test_set_on_hand_is_a_no_op_at_the_target_and_refuses_below_reserved() -> None:
    assert domain.set_on_hand(Counters(4, 1), 4) is None
    change = domain.set_on_hand(Counters(4, 1), 9)
    assert change is not None
    assert change.movement.on_hand_delta == 5
    with pytest.raises(InsufficientStock):
        domain.set_on_hand(Counters(4, 3), 2)


# -- properties ---------------------------------------------------------------------------

Operation = Callable[[Counters, int], StockChange]
OPERATIONS: dict[str, Operation] = {
    "receive": domain.receive,
    "remove": lambda c, q: domain.adjust(c, -q),
    "reserve": domain.reserve,
    "release": domain.release,
    "commit": domain.commit,
    "restock": domain.restock,
}
steps = st.lists(st.tuples(st.sampled_from(sorted(OPERATIONS)), st.integers(1, 20)), max_size=60)


@SETTINGS
@given(steps)
def test_counters_stay_valid_and_equal_the_ledger(sequence: list[tuple[str, int]]) -> None:
    level = Counters(0, 0)
    ledger: list[domain.Movement] = []
    for name, quantity in sequence:
        try:
            change = OPERATIONS[name](level, quantity)
        except InsufficientStock:
            continue  # refused: nothing changes
        assert change.before == level
        level = change.after
        ledger.append(change.movement)
        assert 0 <= level.reserved <= level.on_hand
        assert sum(m.on_hand_delta for m in ledger) == level.on_hand
        assert sum(m.reserved_delta for m in ledger) == level.reserved


counters = st.builds(
    lambda reserved, free: Counters(reserved + free, reserved),
    st.integers(0, 100),
    st.integers(0, 100),
)

INVERSES: list[tuple[Operation, Operation]] = [
    (domain.receive, lambda c, q: domain.adjust(c, -q)),
    (domain.reserve, domain.release),
    (domain.commit, lambda c, q: domain.reserve(domain.restock(c, q).after, q)),
]


@SETTINGS
@given(counters, st.integers(1, 50), st.sampled_from(range(len(INVERSES))))
def test_every_operation_is_undone_by_its_inverse(start: Counters, quantity: int, i: int) -> None:
    forward, backward = INVERSES[i]
    try:
        there = forward(start, quantity)
    except InsufficientStock:
        return
    assert backward(there.after, quantity).after == start


@SETTINGS
@given(counters, counters, st.integers(1, 50))
def test_transfer_there_and_back_restores_both_levels(
    source: Counters, destination: Counters, quantity: int
) -> None:
    try:
        out, into = domain.transfer(source, destination, quantity)
    except InsufficientStock:
        assert quantity > source.available
        return
    back_out, back_in = domain.transfer(into.after, out.after, quantity)
    assert (back_in.after, back_out.after) == (source, destination)
    assert out.after.on_hand + into.after.on_hand == source.on_hand + destination.on_hand
