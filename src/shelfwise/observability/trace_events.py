"""Spans for work done on outbox events after their transaction: each links to the
context every event was written in (OpenTelemetry messaging conventions for batches).

The relay's publish, the live hub's fan-out and a live frame written to one client each
handle a *batch* of events from many requests, so none of them continues one request's
trace; each starts its own span with one link per event instead, and the link carries
the event's type and aggregate id. Searching a trace backend for an order id finds the
request that placed it and every span that carried its events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.util.types import AttributeValue

from shelfwise.observability.tracing import (
    AGGREGATE_ID,
    AGGREGATE_TYPE,
    EVENT_TYPE,
    enabled,
    link_from,
    tracer,
)

MESSAGING_SYSTEM = "messaging.system"
MESSAGING_OPERATION = "messaging.operation.type"
MESSAGING_DESTINATION = "messaging.destination.name"
MESSAGING_MESSAGE_ID = "messaging.message.id"
MESSAGING_BATCH_COUNT = "messaging.batch.message_count"
AGGREGATE_IDS = "shelfwise.aggregate.ids"
# Per span: a relay batch can hold 500 events; a trace backend wants a searchable few.
MAX_AGGREGATE_IDS = 64


class TracedEvent(Protocol):
    @property
    def type(self) -> str: ...
    @property
    def aggregate_type(self) -> str: ...
    @property
    def aggregate_id(self) -> str: ...
    @property
    def position(self) -> int | None: ...
    @property
    def trace_context(self) -> Mapping[str, Any] | None: ...


def event_links(events: Sequence[TracedEvent]) -> list[Link]:
    links = (
        link_from(
            event.trace_context,
            {
                EVENT_TYPE: event.type,
                AGGREGATE_TYPE: event.aggregate_type,
                AGGREGATE_ID: event.aggregate_id,
                MESSAGING_MESSAGE_ID: str(event.position),
            },
        )
        for event in events
    )
    return [link for link in links if link is not None]


def batch_attributes(
    events: Sequence[TracedEvent], *, destination: str, operation: str
) -> dict[str, AttributeValue]:
    ids = list(dict.fromkeys(event.aggregate_id for event in events))[:MAX_AGGREGATE_IDS]
    return {
        MESSAGING_SYSTEM: "shelfwise",
        MESSAGING_DESTINATION: destination,
        MESSAGING_OPERATION: operation,
        MESSAGING_BATCH_COUNT: len(events),
        AGGREGATE_IDS: ids,
    }


def record_batch(
    name: str,
    events: Sequence[TracedEvent],
    *,
    started_ns: int,
    destination: str,
    operation: str,
    kind: SpanKind = SpanKind.PRODUCER,
) -> None:
    """A finished span for a batch already handled (the relay knows its events only once
    its UPDATE returned, and an empty poll must leave no span)."""
    if not enabled() or not events:
        return
    span = tracer().start_span(
        name,
        context=trace.set_span_in_context(trace.INVALID_SPAN),
        kind=kind,
        links=event_links(events),
        attributes=batch_attributes(events, destination=destination, operation=operation),
        start_time=started_ns,
    )
    span.end()


@contextmanager
def batch_span(
    name: str,
    events: Sequence[TracedEvent],
    *,
    destination: str,
    operation: str,
    kind: SpanKind,
    root: bool = True,
    current: bool = True,
) -> Iterator[Span | None]:
    """A span around handling `events`; None (and nothing started) when tracing is off.

    `current=False` does not make it the current span: for an async generator, whose
    context is its consumer's, a current span would leak past each `yield`."""
    if not enabled() or not events:
        yield None
        return
    span = tracer().start_span(
        name,
        context=trace.set_span_in_context(trace.INVALID_SPAN) if root else None,
        kind=kind,
        links=event_links(events),
        attributes=batch_attributes(events, destination=destination, operation=operation),
    )
    try:
        if current:
            with trace.use_span(span, end_on_exit=False):
                yield span
        else:
            yield span
    finally:
        span.end()
