"""An outbox event as an AMQP message, and back (binary mode, as CloudEvents calls it).

The body is the event's payload exactly as stored (JSON, schema given by type + version);
everything about the event travels in the message properties and headers:

| where | value |
| --- | --- |
| routing key, `type` property | event type (`order.reserved`) |
| `message_id` property | the event's id: the inbox deduplicates on it |
| `timestamp` property, `created_at` header | when the event was written (its commit, within ms) |
| header `position` | stream position (commit order, dense) |
| headers `aggregate_type`, `aggregate_id` | what changed |
| header `schema_version` | payload schema version |
| headers `traceparent`, `tracestate` | W3C trace context of the writing request, when it had one |

Delivery mode is persistent; content type application/json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pamqp.commands import Basic

TRACE_HEADERS = ("traceparent", "tracestate")
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A stamped outbox event as the publisher reads it (payload still JSON text)."""

    position: int
    id: int
    type: str
    aggregate_type: str
    aggregate_id: str
    version: int
    payload_json: str
    created_at: datetime
    published_at: datetime | None
    trace: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BrokerEvent:
    """A received event, as an inbox consumer's handler sees it."""

    message_id: str
    position: int
    type: str
    aggregate_type: str
    aggregate_id: str
    version: int
    payload: dict[str, Any]
    created_at: datetime | None
    redelivered: bool
    trace: dict[str, str]


def to_properties(row: OutboxRow) -> Basic.Properties:
    """The message properties of `row`, built straight for the wire: the publisher hands
    them to aiormq without an `aio_pika.Message` in between (its per-field conversions
    cost more CPU per event than everything else of ours, bench/broker.py --profile)."""
    headers: dict[str, Any] = {
        "position": row.position,
        "aggregate_type": row.aggregate_type,
        "aggregate_id": row.aggregate_id,
        "schema_version": row.version,
        "created_at": row.created_at.isoformat(),
    }
    if row.trace:
        for key in TRACE_HEADERS:
            value = row.trace.get(key)
            if isinstance(value, str) and value:
                headers[key] = value
    return Basic.Properties(
        content_type="application/json",
        delivery_mode=PERSISTENT,
        message_id=str(row.id),
        message_type=row.type,
        timestamp=row.created_at,
        app_id="shelfwise",
        headers=headers,
    )


def to_message(row: OutboxRow) -> aio_pika.Message:
    """The same event as an aio-pika message (tools and tests that publish through it)."""
    properties = to_properties(row)
    return aio_pika.Message(
        body=row.payload_json.encode(),
        content_type=properties.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=properties.message_id,
        type=row.type,
        timestamp=row.created_at,
        app_id=properties.app_id,
        headers=properties.headers,
    )


def from_message(message: AbstractIncomingMessage) -> BrokerEvent:
    """Raises ValueError (or KeyError) on a message that is not a Shelfwise event."""
    headers = message.headers
    created = headers.get("created_at")
    return BrokerEvent(
        message_id=str(message.message_id),
        position=int(str(headers["position"])),
        type=str(message.type or message.routing_key),
        aggregate_type=str(headers.get("aggregate_type", "")),
        aggregate_id=str(headers.get("aggregate_id", "")),
        version=int(str(headers.get("schema_version", 1))),
        payload=json.loads(message.body),
        created_at=datetime.fromisoformat(created) if isinstance(created, str) else None,
        redelivered=bool(message.redelivered),
        trace={k: str(headers[k]) for k in TRACE_HEADERS if isinstance(headers.get(k), str)},
    )
