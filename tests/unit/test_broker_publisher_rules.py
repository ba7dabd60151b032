"""The publisher's rules with no I/O: which confirms move the position, and the backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import aiormq
from pamqp import commands
from pamqp.header import ContentHeader

from shelfwise.broker.envelope import OutboxRow, to_message
from shelfwise.broker.publisher import BrokerNacked, BrokerPublisher, PublisherConfig, _tally

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def rows(n: int) -> list[OutboxRow]:
    return [
        OutboxRow(p, 100 + p, "order.reserved", "order", f"o{p}", 1, "{}", NOW, NOW)
        for p in range(1, n + 1)
    ]


ACK = commands.Basic.Ack()
RETURNED: Any = aiormq.abc.DeliveredMessage(
    delivery=commands.Basic.Return(), header=ContentHeader(), body=b"{}", channel=None
)


def test_every_confirm_moves_the_position_and_returns_count_as_confirmed() -> None:
    confirmed, returned, failure = _tally(rows(3), [ACK, RETURNED, ACK])
    assert [r.position for r in confirmed] == [1, 2, 3]
    assert [r.position for r in returned] == [2]
    assert failure is None


def test_a_nack_stops_the_position_before_it_even_if_later_ones_were_acked() -> None:
    nack = aiormq.exceptions.DeliveryError(None, commands.Basic.Nack())
    confirmed, _, failure = _tally(rows(4), [ACK, nack, ACK, ACK])
    assert [r.position for r in confirmed] == [1]
    assert isinstance(failure, BrokerNacked)


def test_a_lost_connection_keeps_the_confirmed_prefix_only() -> None:
    lost = aiormq.exceptions.AMQPConnectionError("reset")
    confirmed, _, failure = _tally(rows(3), [ACK, ACK, lost])
    assert [r.position for r in confirmed] == [1, 2]
    assert failure is lost


def test_backoff_doubles_to_the_cap_with_half_of_it_random() -> None:
    publisher = BrokerPublisher(
        "postgresql://unused",
        "amqp://unused",
        PublisherConfig(backoff_initial=0.2, backoff_max=3.0),
        rng=random.Random(1),
    )
    backoff = publisher.broker_backoff()
    delays = [backoff.after(0.0) for _ in range(8)]
    ceilings = [0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays[4:])) == 4  # jittered, not lockstep


def test_the_message_carries_the_envelope_and_the_trace_context() -> None:
    row = OutboxRow(
        7,
        42,
        "stock.changed",
        "stock_level",
        "9",
        1,
        '{"on_hand": 3}',
        NOW,
        NOW,
        {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01", "ignored": "x"},
    )
    message = to_message(row)
    assert message.body == b'{"on_hand": 3}'
    assert message.message_id == "42"
    assert message.type == "stock.changed"
    assert message.delivery_mode == 2
    assert message.headers["position"] == 7
    assert message.headers["aggregate_id"] == "9"
    assert message.headers["traceparent"].startswith("00-1111")
    assert "ignored" not in message.headers
    assert "tracestate" not in message.headers
