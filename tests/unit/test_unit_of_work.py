"""The writer of events (the unit of work) refuses an event type nobody declared, before
anything is written."""

from __future__ import annotations

from typing import Any, cast

import pytest

from shelfwise.events.outbox import Event
from shelfwise.events.payloads import EventType
from shelfwise.store.unit import UnitOfWork, UnknownEventType


def test_an_undeclared_event_type_fails_loudly_and_a_declared_one_is_buffered() -> None:
    unit = UnitOfWork(conn=cast(Any, None))  # emit only buffers: no connection needed
    with pytest.raises(UnknownEventType, match=r"stock\.chnaged"):
        unit.emit(Event("stock.chnaged", "stock_level", "1", {}))
    assert unit.pending == []
    unit.emit(Event(EventType.STOCK_LOW.value, "stock_level", "1", {}))
    assert [e.type for e in unit.pending] == ["stock.low"]
    assert not unit.wrote_events  # nothing reaches the database before flush()
