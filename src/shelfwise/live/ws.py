"""WebSocket transport: `/v1/ws`, a small JSON protocol over the hub (docs/live.md).

Client → server:
  {"type": "auth", "token": "<access token or API key>"}   (unless the session cookie is used)
  {"type": "subscribe", "channels": ["stock", ...], "since": 123, "batch": true}
  {"type": "unsubscribe", "channels": ["stock:<id>"]}
  {"type": "ping"}
Server → client:
  {"type": "ready", "principal": {...}}         after authentication
  {"type": "subscribed", "channels": [...], "position": N}
  {"type": "event", "position": N, "event": "<type>", "data": {...}, "created_at": ...}
  {"type": "events", "events": [<event messages>]}   instead, after "batch": true: every
                                                      event queued since the last write
  {"type": "reset", "reason": ..., "position": N, "snapshot": "/v1/stock"}
  {"type": "error", "code": ..., "message": ...}
  {"type": "pong", "position": N}
Close codes: 1000 normal, 1008 policy (bad credentials or cross-site Origin), 1009 message
too big, 1012 service restart (draining: reconnect elsewhere), 1013 try again later
(connect rate limit), 4000 slow consumer (resume from your last position), 4001 revoked.
Transport-level pings are sent by the server (uvicorn `ws_ping_interval`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from shelfwise.context import AppContext
from shelfwise.errors import ShelfwiseError
from shelfwise.identity.principal import Principal
from shelfwise.live.auth import (
    Credential,
    authenticate,
    connect_decision,
    credential_of,
    same_origin,
)
from shelfwise.live.channels import ChannelSet, authorize, parse_channels
from shelfwise.live.hub import Closed, Hub, Subscription
from shelfwise.live.router import event_json, reset_json
from shelfwise.observability.metrics import (
    LIVE_CONNECTIONS,
    LIVE_CONNECTS,
    LIVE_DISCONNECTS,
    LIVE_EVENTS_SENT,
    LIVE_FANOUT_LATENCY,
)
from shelfwise.observability.trace_events import batch_span

router = APIRouter()
_SENT = LIVE_EVENTS_SENT.labels("ws")
_LATENCY = LIVE_FANOUT_LATENCY.labels("ws")
MAX_MESSAGE_BYTES = 16 * 1024
AUTH_TIMEOUT_SECONDS = 10.0
CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_RESTART, CLOSE_TRY_LATER = 1008, 1009, 1012, 1013
CLOSE_SLOW, CLOSE_REVOKED = 4000, 4001


class AuthMessage(BaseModel):
    type: Literal["auth"]
    token: Annotated[str, Field(min_length=1, max_length=4096)]


class SubscribeMessage(BaseModel):
    type: Literal["subscribe", "unsubscribe"]
    channels: Annotated[list[str], Field(min_length=1, max_length=50)]
    since: Annotated[int | None, Field(ge=0)] = None
    batch: bool | None = None  # true: events come as {"type": "events", "events": [...]}


class PingMessage(BaseModel):
    type: Literal["ping"]


ClientMessage = TypeAdapter(
    Annotated[AuthMessage | SubscribeMessage | PingMessage, Field(discriminator="type")]
)


class _Connection:
    def __init__(self, websocket: WebSocket, ctx: AppContext, hub: Hub) -> None:
        self.ws = websocket
        self.ctx = ctx
        self.hub = hub
        self.principal: Principal | None = None
        self.credential: Credential | None = None
        self.subscription: Subscription | None = None
        self.channels = ChannelSet()
        self.reason = "client"
        self.subscribed = asyncio.Event()
        self.batch = False

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message, separators=(",", ":")))

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})

    async def receive(self) -> Any:
        text = await self.ws.receive_text()
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            self.reason = "message_too_big"
            await self.ws.close(CLOSE_TOO_BIG, "message too big")
            raise WebSocketDisconnect(CLOSE_TOO_BIG)
        try:
            return ClientMessage.validate_json(text)
        except ValidationError:
            return None

    async def authenticate(self) -> bool:
        self.credential = credential_of(self.ws)
        if (
            self.credential is not None
            and self.credential.kind == "session"
            and not same_origin(self.ws, self.ctx.settings.cors_origins)
        ):
            self.credential = None  # a cookie sent by a cross-site page proves nothing
        if self.credential is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
                    message = await self.receive()
                    if isinstance(message, AuthMessage):
                        self.credential = Credential("bearer", message.token)
        if self.credential is not None:
            self.principal = await authenticate(self.ctx, self.credential)
        return self.principal is not None

    async def handle(self, message: Any) -> None:
        if isinstance(message, PingMessage):
            position = self.subscription.position if self.subscription else self.hub.head
            await self.send({"type": "pong", "position": position})
        elif isinstance(message, SubscribeMessage):
            await self._subscribe(message)
        else:
            await self.error("bad_message", "Send subscribe, unsubscribe or ping as JSON")

    async def _subscribe(self, message: SubscribeMessage) -> None:
        assert self.principal is not None
        try:
            requested = parse_channels(message.channels)
            if message.type == "unsubscribe":
                self.channels = self.channels.minus(requested)
            else:
                authorize(requested, self.principal)
                self.channels = self.channels.union(requested)
        except ShelfwiseError as exc:
            await self.error(exc.code, exc.detail)
            return
        if message.batch is not None:
            self.batch = message.batch
        if self.subscription is None or message.since is not None:
            await self._resubscribe(message.since)
        else:
            self.hub.change_channels(self.subscription, self.channels)
        await self.send(
            {
                "type": "subscribed",
                "channels": self.channels.names(),
                "position": self.subscription.position if self.subscription else 0,
            }
        )

    async def _resubscribe(self, since: int | None) -> None:
        assert self.principal is not None
        if self.subscription is not None:
            since = self.subscription.position if since is None else since
            self.hub.unsubscribe(self.subscription)
            self.subscription.close("resubscribed")  # wakes the pump onto the new one
        self.subscription, reset = await self.hub.subscribe(
            self.channels, self.principal, since=since, transport="ws", credential=self.credential
        )
        self.subscribed.set()
        if reset is not None:
            await self.send({"type": "reset", **reset_json(reset)})

    async def pump(self) -> None:
        """Write events as the hub wakes us, every queued one per wake-up. The hub's ticker
        re-checks the credential (closing the subscription with `revoked`)."""
        await self.subscribed.wait()
        while True:
            assert self.subscription is not None
            try:
                events = await self.subscription.next_batch()
            except Closed as closed:
                if closed.reason == "resubscribed":
                    continue
                raise
            if not events:
                continue  # heartbeat: uvicorn sends transport-level pings itself
            # With tracing on, a span of the connection's linked to each event's writer.
            with batch_span(
                "live send",
                events,
                destination="ws",
                operation="send",
                kind=SpanKind.PRODUCER,
                root=False,
            ):
                if self.batch:  # one message, one socket write, per wake-up
                    frames = self.hub.joined(events, "ws", _ws_frame, ",")
                    await self.ws.send_text(f'{{"type":"events","events":[{frames}]}}')
                else:
                    for event in events:
                        await self.ws.send_text(self.hub.encoded(event, "ws", _ws_frame))
            _SENT.inc(len(events))
            _LATENCY.observe(self.hub.lag_seconds(events[0]))

    async def listen(self) -> None:
        while True:
            message = await self.receive()
            await self.handle(message)


def _ws_frame(event: Any) -> str:
    return json.dumps({"type": "event", **_event_message(event)}, separators=(",", ":"))


def _event_message(event: Any) -> dict[str, Any]:
    body = event_json(event)
    body["event"] = body.pop("type")
    return body


async def _serve(conn: _Connection) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            listener = group.create_task(conn.listen())
            pump = group.create_task(conn.pump())
            await asyncio.wait({listener, pump}, return_when=asyncio.FIRST_COMPLETED)
            for task in (listener, pump):
                task.cancel()
    except* Closed as closed:
        first = closed.exceptions[0]
        reason = first.reason if isinstance(first, Closed) else "closed"
        conn.reason = reason
        code = {
            "draining": CLOSE_RESTART,
            "slow_consumer": CLOSE_SLOW,
            "revoked": CLOSE_REVOKED,
        }.get(reason, 1000)
        with contextlib.suppress(Exception):
            await conn.ws.close(code, reason)
    except* WebSocketDisconnect:
        pass


@router.websocket("/v1/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    ctx: AppContext = websocket.app.state.ctx
    hub = ctx.hub
    if hub is None or hub.draining:
        await websocket.close(CLOSE_RESTART, "draining")
        return
    decision = await connect_decision(ctx, websocket.scope)  # the one live connect limit
    if decision is not None and not decision.allowed:
        await websocket.close(CLOSE_TRY_LATER, "too many connections; back off")
        return
    await websocket.accept()
    conn = _Connection(websocket, ctx, hub)
    if not await conn.authenticate():
        LIVE_DISCONNECTS.labels("ws", "unauthenticated").inc()
        await websocket.close(
            CLOSE_POLICY, "authenticate with the session cookie or an auth message"
        )
        return
    assert conn.principal is not None
    LIVE_CONNECTS.labels("ws").inc()
    LIVE_CONNECTIONS.labels("ws").inc()
    await conn.send(
        {
            "type": "ready",
            "principal": {"kind": conn.principal.kind.value, "id": str(conn.principal.id)},
        }
    )
    try:
        await _serve(conn)
    finally:
        if conn.subscription is not None:
            hub.unsubscribe(conn.subscription)
        LIVE_CONNECTIONS.labels("ws").dec()
        LIVE_DISCONNECTS.labels("ws", conn.reason).inc()
