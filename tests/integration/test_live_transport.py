"""Live transports over real sockets: what the stream's headers still get from the
middleware stack, batching under a burst, and revocation closing WebSockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.identity.models import Role
from tests.integration.test_live import adjust, live_app, stocked
from tests.live_support import running_relay, serve, settle, sse_events, take
from tests.support import make_user, wait_until


async def test_sse_keeps_the_stack_headers_and_is_never_compressed(
    client: httpx.AsyncClient, staff: dict[str, Any], database_url: str, app: Any
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    async with (
        running_relay(database_url),
        serve(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http,
    ):
        await settle(app.state.ctx)  # the stocking event is before the stream's start
        headers = {
            **staff["headers"],
            "Accept-Encoding": "gzip",
            "X-Request-ID": "stream-request-1",
        }
        async with http.stream("GET", "/v1/stream?channels=stock", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["x-request-id"] == "stream-request-1"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["server-timing"].startswith("app;dur=")
            assert "content-encoding" not in response.headers
            events = sse_events(response)
            # A burst: the events come in order, each once, however they are batched.
            for quantity in (1, 2, 3, 4):
                await adjust(client, staff["headers"], product_id, location_id, quantity)
            burst = await take(events, 4, kind="stock.changed")
            hub = app.state.ctx.hub
            assert hub.subscriptions == 1

        async def unsubscribed() -> bool:  # the client went away: so does its subscription
            return bool(hub.subscriptions == 0)

        await wait_until(unsubscribed, what="the closed stream's subscription to end")
    assert [e.data["data"]["on_hand"] for e in burst] == [6, 8, 11, 15]
    ids = [e.id for e in burst]
    assert ids == sorted(set(ids))


async def test_revoking_an_api_key_closes_its_websockets(
    settings: Settings, clock: FixedClock, database_url: str
) -> None:
    async with live_app(
        settings, clock, live_recheck_seconds=0.05, live_heartbeat_seconds=0.05
    ) as (app, ctx, address):
        admin = await make_user(ctx, Role.ADMIN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            created = await c.post(
                "/v1/api-keys",
                json={"name": "scanner", "scopes": ["stock:read"]},
                headers=admin["headers"],
            )
            assert created.status_code == 201, created.text
            key = created.json()
            sockets = [await websockets.connect(f"ws://{address}/v1/ws") for _ in range(2)]
            try:
                for ws in sockets:
                    await ws.send(json.dumps({"type": "auth", "token": key["secret"]}))
                    assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
                    await ws.send(json.dumps({"type": "subscribe", "channels": ["stock"]}))
                    subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    assert subscribed["type"] == "subscribed"
                revoked = await c.delete(f"/v1/api-keys/{key['id']}", headers=admin["headers"])
                assert revoked.status_code == 200
                for ws in sockets:
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10)
                    assert closed.value.rcvd is not None
                    assert closed.value.rcvd.code == 4001
            finally:
                for ws in sockets:
                    await ws.close()


async def test_websocket_batch_mode_sends_every_queued_event_in_one_message(
    client: httpx.AsyncClient, staff: dict[str, Any], database_url: str, app: Any
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    token = staff["headers"]["Authorization"].removeprefix("Bearer ")
    async with running_relay(database_url), serve(app) as address:
        await settle(app.state.ctx)
        async with websockets.connect(f"ws://{address}/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            channel = f"stock:{product_id}"
            await ws.send(json.dumps({"type": "subscribe", "channels": [channel], "batch": True}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
            for quantity in (1, 2, 3):
                await adjust(client, staff["headers"], product_id, location_id, quantity)
            received: list[dict[str, Any]] = []
            while len(received) < 3:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert message["type"] == "events"
                assert all(e["type"] == "event" for e in message["events"])
                received += message["events"]
    assert [e["data"]["on_hand"] for e in received] == [6, 8, 11]
    positions = [e["position"] for e in received]
    assert positions == sorted(set(positions))
