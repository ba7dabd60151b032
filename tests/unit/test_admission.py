"""The hot-level gate without a database (orders/admission.py): slots, sold out, events."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from shelfwise.errors import InsufficientStock
from shelfwise.events.outbox import PublishedEvent
from shelfwise.orders.admission import HotLevelGate, hot_level

PRODUCT, LOCATION = uuid.uuid4(), uuid.uuid4()
ONE = {PRODUCT: 1}
KEY = (PRODUCT, LOCATION)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def stock_changed(version: int, available: int, product: uuid.UUID = PRODUCT) -> PublishedEvent:
    payload = {
        "product_id": str(product),
        "location_id": str(LOCATION),
        "level_version": version,
        "available": available,
    }
    return PublishedEvent(
        position=version,
        id=version,
        type="stock.changed",
        aggregate_type="stock_level",
        aggregate_id="1",
        payload=payload,
        version=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        published_at=None,
    )


def empty_refusal() -> InsufficientStock:
    return InsufficientStock(
        "none left", lines=[{"product_id": str(PRODUCT), "requested": 1, "available": 0}]
    )


async def refused_inside(gate: HotLevelGate, refusal: InsufficientStock) -> None:
    with pytest.raises(InsufficientStock):
        async with gate.admit(ONE, LOCATION, None):
            raise refusal


def test_only_one_line_orders_at_a_location_are_gated() -> None:
    assert hot_level(ONE, LOCATION) == KEY
    assert hot_level(ONE, None) is None
    assert hot_level({PRODUCT: 1, uuid.uuid4(): 1}, LOCATION) is None


async def test_at_most_holders_run_and_a_cancelled_waiter_passes_its_slot_on() -> None:
    gate = HotLevelGate(None, holders=2)
    running = 0
    most = 0
    release = asyncio.Event()

    async def place() -> None:
        nonlocal running, most
        async with gate.admit(ONE, LOCATION, None):
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(place()) for _ in range(6)]
    await asyncio.sleep(0)  # one pass: two hold a slot, four wait
    assert running == 2
    tasks[2].cancel()  # a waiter gives up; the queue must not lose a slot
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert most == 2
    assert [isinstance(r, asyncio.CancelledError) for r in results].count(True) == 1
    assert not gate.is_sold_out(KEY)
    assert gate._levels == {}  # nothing left behind


async def test_an_empty_refusal_answers_waiters_and_newcomers_until_the_ttl() -> None:
    clock = Clock()
    gate = HotLevelGate(None, holders=1, sold_out_ttl=1.0, clock=clock)
    entered = asyncio.Event()
    refuse = asyncio.Event()

    async def first() -> None:
        async with gate.admit(ONE, LOCATION, None):
            entered.set()
            await refuse.wait()
            raise empty_refusal()

    async def waiter() -> str:
        try:
            async with gate.admit(ONE, LOCATION, None):
                return "reached the database"
        except InsufficientStock as exc:
            return str(exc.extra["lines"][0]["available"])

    holder = asyncio.create_task(first())
    await entered.wait()
    waiters = [asyncio.create_task(waiter()) for _ in range(5)]
    await asyncio.sleep(0)
    refuse.set()
    with pytest.raises(InsufficientStock):
        await holder
    assert await asyncio.gather(*waiters) == ["0"] * 5  # none reached the database
    assert await waiter() == "0"
    clock.now += 1.01
    assert await waiter() == "reached the database"


async def test_a_refusal_with_units_left_is_no_sold_out() -> None:
    gate = HotLevelGate(None)
    some_left = InsufficientStock(
        "too many", lines=[{"product_id": str(PRODUCT), "requested": 5, "available": 3}]
    )
    await refused_inside(gate, some_left)
    assert not gate.is_sold_out(KEY)


async def test_events_reopen_only_when_newer_than_the_emptying_change() -> None:
    gate = HotLevelGate(None, clock=Clock())
    await refused_inside(gate, empty_refusal())  # the emptying event not yet delivered
    assert gate.is_sold_out(KEY)  # (the level's entry is kept while it is sold out)
    gate.on_event(stock_changed(8, 2))  # older reservations, delivered late: not news
    gate.on_event(stock_changed(9, 1))
    assert gate.is_sold_out(KEY)
    gate.on_event(stock_changed(10, 0))  # the one that emptied it: now the version is known
    gate.on_event(stock_changed(10, 0))  # delivered twice: ignored
    gate.on_event(stock_changed(5, 1, product=uuid.uuid4()))  # another level: ignored
    assert gate.is_sold_out(KEY)
    gate.on_event(stock_changed(11, 4))  # a restock after it
    assert not gate.is_sold_out(KEY)


async def test_an_event_saying_empty_closes_a_level_in_use_without_a_refusal() -> None:
    gate = HotLevelGate(None, clock=Clock())
    inside = asyncio.Event()
    done = asyncio.Event()

    async def holder() -> None:
        async with gate.admit(ONE, LOCATION, None):
            inside.set()
            await done.wait()

    task = asyncio.create_task(holder())
    await inside.wait()
    gate.on_event(stock_changed(3, 0))
    assert gate.is_sold_out(KEY)
    done.set()
    await task
