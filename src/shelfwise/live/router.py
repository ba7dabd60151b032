"""Server-Sent Events and long-poll over the hub. The WebSocket is in `live/ws.py`.

SSE: `id:` is the stream position, so the browser's automatic reconnect sends
`Last-Event-ID` and resumes exactly where it stopped. A `retry:` hint with jitter spreads
reconnects after a restart; `: ping` comments on a connection quiet for
`live_heartbeat_seconds` keep proxies from timing it out; `X-Accel-Buffering: no` stops
nginx from buffering it. Each wake-up writes every queued event in one chunk, straight to
the server past the middleware stack (`live/streaming.py`); a stream waiting with nothing
queued gets the hub's flush written by the hub itself, one chunk per audience framed once
for all of its connections (`_direct_writes`, decision 0038).
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind

from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.errors import PositionTooOld, Unavailable
from shelfwise.events.outbox import PublishedEvent
from shelfwise.http.deps import ContextDep
from shelfwise.http.ratelimit import refuse, remember
from shelfwise.http.server_protocol import BodyWriter
from shelfwise.identity.dependencies import CurrentPrincipal
from shelfwise.live.audience import Batch
from shelfwise.live.auth import connect_decision, credential_of
from shelfwise.live.channels import authorize, parse_channels
from shelfwise.live.hub import Closed, Hub, Reset, Subscription, lag_seconds
from shelfwise.live.streaming import EventStreamResponse
from shelfwise.observability.metrics import (
    LIVE_CONNECTIONS,
    LIVE_CONNECTS,
    LIVE_DISCONNECTS,
    LIVE_EVENTS_SENT,
    LIVE_FANOUT_LATENCY,
)
from shelfwise.observability.trace_events import batch_span
from shelfwise.observability.tracing import enabled as tracing_enabled

router = APIRouter(prefix="/v1", tags=["live"])
_CHANNEL = r"[a-z]+(?::[0-9A-Za-z-]+)?"
CHANNEL_LIST_PATTERN = rf"^[\s,]*{_CHANNEL}(?:\s*,[\s,]*{_CHANNEL})*[\s,]*$"
Channels = Annotated[
    list[str],
    Query(
        description="stock, stock:<product_id>, orders, imports:<job_id>; repeat or "
        "comma-separate; at least one (an empty `channels=` is refused)",
        min_length=1,
        json_schema_extra={"items": {"type": "string", "pattern": CHANNEL_LIST_PATTERN}},
    ),
]
Since = Annotated[int | None, Query(ge=0, description="Resume after this stream position")]


class Draining(Unavailable):
    code = "draining"
    title = "This instance is shutting down; reconnect"


def event_json(event: PublishedEvent) -> dict[str, Any]:
    return {
        "position": event.position,
        "type": event.type,
        "data": event.payload,
        "created_at": event.created_at.isoformat(),
    }


def reset_json(reset: Reset) -> dict[str, Any]:
    return {"reason": reset.reason, "position": reset.position, "snapshot": reset.snapshot}


def _hub(ctx: AppContext) -> Hub:
    if ctx.hub is None or ctx.hub.draining:
        raise Draining(
            "Live updates are not available on this instance; reconnect",
            headers={"Retry-After": "1"},
        )
    return ctx.hub


async def _limit_connects(request: Request, ctx: AppContext) -> None:
    """Reconnect storms: a client may open only so many streams per minute."""
    decision = await connect_decision(ctx, request.scope)
    if decision is not None:
        remember(request.scope, decision)
        if not decision.allowed:
            raise refuse(decision)


def _resume_point(since: int | None, last_event_id: str | None) -> int | None:
    if last_event_id and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return since


def _sse_frame(event: PublishedEvent) -> bytes:
    return _sse(event.type, event_json(event), id_=event.position)


def _sse(event: str, data: dict[str, Any], *, id_: int | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


_SENT = LIVE_EVENTS_SENT.labels("sse")
_LATENCY = LIVE_FANOUT_LATENCY.labels("sse")
_CHUNK = "sse-chunk"  # a batch's frames, joined and framed as one HTTP/1.1 chunk


def _direct_writes(hub: Hub, subscription: Subscription) -> Callable[[BodyWriter], None]:
    """Once the response has started: let the hub write this stream's batches through
    the server's `writer` (the hub counts their metrics). Not with tracing on: every
    write is then a span of the stream's request, made by its own task."""

    def attach(writer: BodyWriter) -> None:
        def write(batch: Batch) -> bool:
            chunk = batch.encodings.get(_CHUNK)
            if chunk is None:
                body = hub.joined(batch, "sse", _sse_frame, b"")
                chunk = batch.encodings[_CHUNK] = (BodyWriter.chunk(body), len(body))
            return writer.write(*chunk)

        if not tracing_enabled():
            subscription.direct = write

    return attach


async def _sse_body(
    settings: Settings, hub: Hub, subscription: Subscription, reset: Reset | None
) -> AsyncIterator[bytes]:
    reason = "client"
    LIVE_CONNECTIONS.labels("sse").inc()
    try:
        jitter = random.uniform(0.5, 1.5)  # noqa: S311 (spreading reconnects, not crypto)
        yield f"retry: {int(settings.live_retry_ms * jitter)}\n\n".encode()
        if reset is not None:
            yield _sse("reset", reset_json(reset), id_=reset.position)
        while True:
            try:
                events = await subscription.next_batch()
            except Closed as closed:
                reason = closed.reason
                name = "reconnect" if reason == "draining" else "close"
                yield _sse(name, {"reason": reason, "position": subscription.position})
                return
            if not events:
                yield b": ping\n\n"
                continue
            # Everything queued since the last wake-up, in one write; with tracing on, in a
            # span of the stream's request linked to each event's writer. (Tracing off: no
            # context manager at all — per write on 5,000 streams, it cost more than the
            # hub's own work.)
            chunk = hub.joined(events, "sse", _sse_frame, b"")
            if not tracing_enabled():
                yield chunk
            else:
                with batch_span(
                    "live send",
                    events,
                    destination="sse",
                    operation="send",
                    kind=SpanKind.PRODUCER,
                    root=False,
                    current=False,
                ):
                    yield chunk
            _SENT.inc(len(events))
            _LATENCY.observe(hub.lag_seconds(events[0]))  # the oldest event of the write
    finally:
        hub.unsubscribe(subscription)
        LIVE_CONNECTIONS.labels("sse").dec()
        LIVE_DISCONNECTS.labels("sse", reason).inc()


@router.get(
    "/stream",
    response_class=EventStreamResponse,
    # Explicit: FastAPI reads the default status from the response class's __init__,
    # and EventStreamResponse's has none (OpenAPI generation failed without it).
    status_code=200,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(
    request: Request,
    principal: CurrentPrincipal,
    ctx: ContextDep,
    channels: Channels,
    since: Since = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> EventStreamResponse:
    """Server-Sent Events. Resume with `Last-Event-ID` (sent by browsers automatically)."""
    wanted = parse_channels(channels)
    authorize(wanted, principal)
    hub = _hub(ctx)
    await _limit_connects(request, ctx)
    subscription, reset = await hub.subscribe(
        wanted,
        principal,
        since=_resume_point(since, last_event_id),
        transport="sse",
        credential=credential_of(request),
    )
    LIVE_CONNECTS.labels("sse").inc()
    return EventStreamResponse(
        _sse_body(ctx.settings, hub, subscription, reset),
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
        on_disconnect=lambda: subscription.close("client"),
        on_direct=_direct_writes(hub, subscription),
    )


@router.get(
    "/poll",
    responses={
        204: {"description": "No event before the timeout"},
        410: {"description": "Position too old: reload the snapshot"},
    },
)
async def poll(
    request: Request,
    principal: CurrentPrincipal,
    ctx: ContextDep,
    channels: Channels,
    since: Since = None,
    wait: Annotated[int, Query(alias="timeout", ge=0, le=55)] = 25,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Long-poll: answers as soon as events after `since` exist, or 204 after `timeout` s.
    Without `since`, answers at once with the current position to start from."""
    wanted = parse_channels(channels)
    authorize(wanted, principal)
    hub = _hub(ctx)
    await _limit_connects(request, ctx)
    subscription, reset = await hub.subscribe(wanted, principal, since=since, transport="poll")
    LIVE_CONNECTS.labels("poll").inc()
    LIVE_CONNECTIONS.labels("poll").inc()
    try:
        if reset is not None:
            raise PositionTooOld(
                "Reload the snapshot, then poll from its position", **reset_json(reset)
            )
        headers = {"Cache-Control": "no-store"}
        if since is None:
            return JSONResponse({"events": [], "position": subscription.position}, headers=headers)
        events: list[PublishedEvent] = []
        try:
            first = await subscription.next(float(wait))
            if first is not None:
                events.append(first)
                while len(events) < limit and (more := await subscription.next(0.0)):
                    events.append(more)
        except Closed:
            pass  # draining: answer with what there is; the client polls again elsewhere
        if not events:
            return Response(
                status_code=status.HTTP_204_NO_CONTENT,
                headers={**headers, "X-Stream-Position": str(subscription.position)},
            )
        LIVE_EVENTS_SENT.labels("poll").inc(len(events))
        for event in events:
            LIVE_FANOUT_LATENCY.labels("poll").observe(lag_seconds(event))
        # Like an SSE or WebSocket write: with tracing on, a span of this poll's request
        # linked to each event's writer (the answer is written once this returns).
        with batch_span(
            "live send",
            events,
            destination="poll",
            operation="send",
            kind=SpanKind.PRODUCER,
            root=False,
        ):
            return JSONResponse(
                {"events": [event_json(e) for e in events], "position": subscription.position},
                headers=headers,
            )
    finally:
        hub.unsubscribe(subscription)
        LIVE_CONNECTIONS.labels("poll").dec()
        LIVE_DISCONNECTS.labels("poll", "client").inc()
