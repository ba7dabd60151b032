"""The hub's fan-out: batched wake-ups, order and exactly-once across backlog and live
events, heartbeats for quiet connections, and the per-credential re-check."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shelfwise.events.outbox import PublishedEvent
from shelfwise.identity.models import Role
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import ROLE_SCOPES
from shelfwise.live.auth import Credential, Reauthorization
from shelfwise.live.channels import parse_channels
from shelfwise.live.hub import FANOUT_SHARE, LIVE_ROLE_FANOUT_SHARE, Closed, Hub, Subscription

STAFF = Principal(PrincipalKind.USER, uuid.uuid4(), ROLE_SCOPES[Role.STAFF], Role.STAFF)
STOCK = parse_channels(["stock"])


def stock_event(position: int) -> PublishedEvent:
    return PublishedEvent(
        position=position,
        id=position,
        type="stock.changed",
        aggregate_type="stock_level",
        aggregate_id="1",
        payload={"product_id": "p", "on_hand": position},
        version=position,
        created_at=datetime.now(UTC),
        published_at=None,
    )


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def hub(clock: Clock | None = None, **options: Any) -> Hub:
    # Subscribing without a position and publishing by hand never touch the database.
    options = {"flush_seconds": 3600.0, "clock": clock or Clock(), **options}
    return Hub(None, **options)


async def settled(task: asyncio.Task[Any]) -> bool:
    """Give the loop a few turns; has `task` finished?"""
    for _ in range(5):
        await asyncio.sleep(0)
    return task.done()


def positions(events: list[PublishedEvent]) -> list[int]:
    return [e.position for e in events]


async def test_queued_events_wait_for_the_flush_and_arrive_as_one_batch() -> None:
    live = hub()
    subscription, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
    live.publish([stock_event(1), stock_event(2)])  # first flush: at once
    assert positions(await subscription.next_batch()) == [1, 2]

    waiting = asyncio.create_task(subscription.next_batch())
    assert not await settled(waiting)
    live.publish([stock_event(3)])  # within the interval: queued, nobody woken
    assert not await settled(waiting)
    live.publish([stock_event(4), stock_event(5)])
    assert not await settled(waiting)
    live.flush()
    assert await settled(waiting)
    assert positions(waiting.result()) == [3, 4, 5]


async def test_resume_then_live_events_in_order_exactly_once() -> None:
    live = hub(window=100)
    live.publish([stock_event(p) for p in range(1, 6)])
    resumed, reset = await live.subscribe(STOCK, STAFF, since=2, transport="sse")
    assert reset is None
    live.publish([stock_event(6), stock_event(7)])
    live.publish([stock_event(7)])  # a repeat (e.g. a re-read page) is not delivered twice
    live.flush()
    assert positions(await resumed.next_batch()) == [3, 4, 5, 6, 7]
    live.publish([stock_event(8)])
    live.flush()
    assert positions(await resumed.next_batch()) == [8]


async def test_a_full_queue_disconnects_only_the_slow_subscriber() -> None:
    live = hub(queue_limit=3)
    slow, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
    fast, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
    for position in range(1, 5):
        live.publish([stock_event(position)])
        live.flush()
        assert positions(await fast.next_batch()) == [position]
    assert slow.closed_reason == "slow_consumer"
    with pytest.raises(Closed):
        await slow.next_batch()


async def test_heartbeat_only_for_connections_that_were_quiet() -> None:
    clock = Clock()
    live = hub(clock, heartbeat_seconds=15.0, flush_seconds=0.0)
    written, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
    quiet, _ = await live.subscribe(parse_channels(["orders"]), STAFF, since=None, transport="sse")
    clock.t += 10.0
    live.publish([stock_event(1)])  # written to `written` only: `quiet` wants orders
    assert positions(await written.next_batch()) == [1]

    quiet_waiting = asyncio.create_task(quiet.next_batch())
    written_waiting = asyncio.create_task(written.next_batch())
    live.heartbeats(clock.t + 4.0)  # 14 s since `quiet` subscribed
    assert not await settled(quiet_waiting)
    live.heartbeats(clock.t + 5.0)  # 15 s: `quiet` gets a ping; `written` wrote 5 s ago
    assert await settled(quiet_waiting)
    assert quiet_waiting.result() == []
    assert not await settled(written_waiting)
    live.heartbeats(clock.t + 15.0)
    assert await settled(written_waiting)
    assert written_waiting.result() == []


class Connection:
    def __init__(self) -> None:
        self.closed: str | None = None

    def close(self, reason: str) -> None:
        self.closed = reason


async def test_one_check_per_credential_per_interval() -> None:
    checks: list[str] = []
    revoked = {"gone"}

    async def check(credential: Credential) -> bool:
        checks.append(credential.value)
        return credential.value not in revoked

    rechecks = Reauthorization(check, interval=15.0)
    shared = [Connection() for _ in range(100)]
    for connection in shared:
        rechecks.watch(Credential("bearer", "token"), connection, now=0.0)
    doomed = [Connection(), Connection()]
    for connection in doomed:
        rechecks.watch(Credential("session", "gone"), connection, now=5.0)

    assert await rechecks.sweep(now=14.0) == 0
    assert await rechecks.sweep(now=15.0) == 1
    assert checks == ["token"]
    assert await rechecks.sweep(now=20.0) == 1
    assert checks == ["token", "gone"]
    assert [c.closed for c in doomed] == ["revoked", "revoked"]
    assert all(c.closed is None for c in shared)
    assert await rechecks.sweep(now=29.0) == 0  # "token" was checked at 15
    assert await rechecks.sweep(now=30.0) == 1


async def test_a_failed_check_keeps_connections_and_retries() -> None:
    calls = 0

    async def check(credential: Credential) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database down")
        return False

    rechecks = Reauthorization(check, interval=1.0)
    connection = Connection()
    rechecks.watch(Credential("bearer", "t"), connection, now=0.0)
    assert await rechecks.sweep(now=1.0) == 1
    assert connection.closed is None
    assert await rechecks.sweep(now=1.5) == 1  # not refreshed by the failure: due again
    assert connection.closed == "revoked"


async def test_hub_closes_revoked_subscriptions_and_forgets_closed_ones() -> None:
    async def check(credential: Credential) -> bool:
        return credential.value != "revoked"

    rechecks = Reauthorization(check, interval=1.0)
    live = hub(rechecks=rechecks)
    keep, _ = await live.subscribe(
        STOCK, STAFF, since=None, transport="sse", credential=Credential("bearer", "ok")
    )
    lose: Subscription
    lose, _ = await live.subscribe(
        STOCK, STAFF, since=None, transport="ws", credential=Credential("bearer", "revoked")
    )
    gone, _ = await live.subscribe(
        STOCK, STAFF, since=None, transport="sse", credential=Credential("bearer", "revoked")
    )
    live.unsubscribe(gone)
    assert await rechecks.sweep(now=101.0) == 2
    assert (keep.closed_reason, lose.closed_reason, gone.closed_reason) == (None, "revoked", None)


async def test_a_slow_fan_out_spaces_the_next_flush() -> None:
    clock = Clock()
    live = hub(clock, flush_seconds=0.05, fanout_share=FANOUT_SHARE)
    first, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")
    second, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")

    async def slow_writer(subscription: Subscription) -> None:
        await subscription.next_batch()
        clock.t += 0.1  # writing to this client took 100 ms of the loop

    writers = [asyncio.create_task(slow_writer(s)) for s in (first, second)]
    assert not await settled(writers[0])
    live.publish([stock_event(1)])
    assert await settled(writers[0])
    assert await settled(writers[1])
    waiting = asyncio.create_task(first.next_batch())
    assert not await settled(waiting)
    live.publish([stock_event(2)])  # both queued: 2 x 100 ms expected, x 2
    assert live.flush_interval() == pytest.approx(0.4)
    clock.t += 0.1  # 0.3 s after the last flush: the next is due at 0.4 s
    assert not await settled(waiting)
    live.flush()
    assert positions(await waiting) == [2]


CUSTOMER_A = Principal(PrincipalKind.USER, uuid.uuid4(), ROLE_SCOPES[Role.CUSTOMER], Role.CUSTOMER)
CUSTOMER_B = Principal(PrincipalKind.USER, uuid.uuid4(), ROLE_SCOPES[Role.CUSTOMER], Role.CUSTOMER)
ORDERS = parse_channels(["orders"])


def order_event(position: int, owner: Principal) -> PublishedEvent:
    return PublishedEvent(
        position=position,
        id=position,
        type="order.reserved",
        aggregate_type="order",
        aggregate_id=str(position),
        payload={"placed_by_user_id": str(owner.id)},
        version=1,
        created_at=datetime.now(UTC),
        published_at=None,
    )


async def test_an_audience_shares_one_batch_and_one_encoding() -> None:
    live = hub()
    many = [(await live.subscribe(STOCK, STAFF, since=None, transport="sse"))[0] for _ in range(50)]
    encoded: list[int] = []

    def encode(event: PublishedEvent) -> bytes:
        encoded.append(event.position)
        return f"{event.position};".encode()

    live.publish([stock_event(1), stock_event(2)])
    batches = [await s.next_batch() for s in many]
    assert all(b is batches[0] for b in batches)  # one object for the whole audience
    assert {live.joined(b, "sse", encode, b"") for b in batches} == {b"1;2;"}
    assert encoded == [1, 2]  # each event encoded once, the batch joined once


async def test_orders_audiences_are_per_owner_unless_managing() -> None:
    live = hub(flush_seconds=0.0)
    a, _ = await live.subscribe(ORDERS, CUSTOMER_A, since=None, transport="sse")
    a2, _ = await live.subscribe(ORDERS, CUSTOMER_A, since=None, transport="ws")
    b, _ = await live.subscribe(ORDERS, CUSTOMER_B, since=None, transport="sse")
    staff, _ = await live.subscribe(ORDERS, STAFF, since=None, transport="sse")
    live.publish([order_event(1, CUSTOMER_A), order_event(2, CUSTOMER_B)])
    assert positions(list(await a.next_batch())) == [1]
    assert positions(list(await a2.next_batch())) == [1]
    assert positions(list(await b.next_batch())) == [2]
    assert positions(list(await staff.next_batch())) == [1, 2]
    assert a.audience is a2.audience
    assert a.audience is not b.audience


async def test_changed_channels_filter_what_was_queued_and_move_the_audience() -> None:
    live = hub()
    subscription, _ = await live.subscribe(STOCK, STAFF, since=None, transport="ws")
    live.publish([stock_event(1)])  # first flush: at once
    live.publish([order_event(2, STAFF), stock_event(3)])
    live.flush()  # queued for `stock`: events 1 and 3, not read yet
    live.change_channels(subscription, ORDERS)
    live.publish([order_event(4, STAFF), stock_event(5)])
    live.flush()
    assert positions(list(await subscription.next_batch())) == [4]


async def test_long_poll_takes_one_event_at_a_time_across_batches() -> None:
    live = hub(flush_seconds=0.0)
    subscription, _ = await live.subscribe(STOCK, STAFF, since=None, transport="poll")
    live.publish([stock_event(1), stock_event(2)])
    live.publish([stock_event(3)])
    taken = [await subscription.next(0.0) for _ in range(4)]
    assert [e.position if e else None for e in taken] == [1, 2, 3, None]
    assert subscription.pending() == 0


async def live_role_hub_after_a_slow_flush() -> tuple[Hub, Subscription]:
    """A live-role hub and its one subscriber, whose first flush took 200 ms to write."""
    clock = Clock()
    live = hub(clock, flush_seconds=0.05, fanout_share=LIVE_ROLE_FANOUT_SHARE)
    subscription, _ = await live.subscribe(STOCK, STAFF, since=None, transport="sse")

    async def slow_writer() -> None:
        await subscription.next_batch()
        clock.t += 0.2  # writing took 200 ms of the loop

    writer = asyncio.create_task(slow_writer())
    live.publish([stock_event(1)])
    assert await settled(writer)
    return live, subscription


async def test_a_live_role_hub_flushes_once_the_last_fan_out_has_written() -> None:
    live, subscription = await live_role_hub_after_a_slow_flush()
    waiting = asyncio.create_task(subscription.next_batch())
    live.publish([stock_event(2)])  # 200 ms after the last flush, which took 200 ms
    assert await settled(waiting)  # (with FANOUT_SHARE: at 400 ms, see the test above)
    assert positions(list(waiting.result())) == [2]


async def test_a_live_role_hub_leaves_room_for_streams_that_are_opening() -> None:
    live, subscription = await live_role_hub_after_a_slow_flush()
    await live.subscribe(STOCK, STAFF, since=None, transport="sse")  # a stream opens
    waiting = asyncio.create_task(subscription.next_batch())
    live.publish([stock_event(2)])  # 200 ms after the last flush, which took 200 ms
    assert not await settled(waiting)  # back to back it would be now (the test above)
    assert live.flush_interval() == pytest.approx(2 * (2 * 0.2))  # two waiting, half the loop
    live.flush()
    assert await settled(waiting)
