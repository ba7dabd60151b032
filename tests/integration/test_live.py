"""Live updates end to end: relay → hub → SSE / long-poll / WebSocket, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import text

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.identity.models import Role
from shelfwise.live.channels import parse_channels
from shelfwise.live.hub import Closed
from tests.live_support import running_relay, serve, settle, sse_events, take
from tests.support import PASSWORD, create_location, create_product, make_user, receive_stock


@contextlib.asynccontextmanager
async def live_app(
    settings: Settings, clock: FixedClock, **overrides: Any
) -> AsyncIterator[tuple[Any, AppContext, str]]:
    app = create_app(settings.model_copy(update=overrides), clock=clock)
    async with app.router.lifespan_context(app), serve(app) as address:
        yield app, app.state.ctx, address


async def stocked(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[str, str]:
    product = await create_product(client, headers)
    location = await create_location(client, headers)
    assert (
        await receive_stock(client, headers, product["id"], location["id"], 5)
    ).status_code == 201
    return product["id"], location["id"]


async def adjust(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    product_id: str,
    location_id: str,
    quantity: int,
) -> None:
    response = await receive_stock(client, headers, product_id, location_id, quantity)
    assert response.status_code == 201, response.text


async def test_sse_delivers_and_resumes_without_loss(
    client: httpx.AsyncClient, staff: dict[str, Any], database_url: str, app: Any
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    async with (
        running_relay(database_url),
        serve(app) as address,
        httpx.AsyncClient(
            base_url=f"http://{address}", headers=staff["headers"], timeout=10
        ) as http,
    ):
        # The stocking event must be in the hub before the stream starts at its head, or
        # it arrives live as the first event.
        await settle(app.state.ctx)
        url = f"/v1/stream?channels=stock:{product_id}"
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            events = sse_events(response)
            await adjust(client, staff["headers"], product_id, location_id, 2)
            [first] = await take(events, 1, kind="stock.changed")
            assert first.data["data"]["on_hand"] == 7
            last_seen = first.id
        # Disconnected: three changes happen meanwhile.
        for quantity in (1, 1, 1):
            await adjust(client, staff["headers"], product_id, location_id, quantity)
        async with http.stream("GET", url, headers={"Last-Event-ID": str(last_seen)}) as resumed:
            missed = await take(sse_events(resumed), 3, kind="stock.changed")
    assert [e.data["data"]["on_hand"] for e in missed] == [8, 9, 10]
    ids = [e.id for e in missed]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert ids[0] > last_seen


async def test_long_poll_returns_events_or_204(
    client: httpx.AsyncClient, staff: dict[str, Any], database_url: str, ctx: AppContext
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    async with running_relay(database_url):
        await settle(ctx)
        start = await client.get("/v1/poll", params={"channels": "stock"}, headers=staff["headers"])
        position = start.json()["position"]
        await adjust(client, staff["headers"], product_id, location_id, 3)
        polled = await client.get(
            "/v1/poll",
            params={"channels": "stock", "since": position, "timeout": 10},
            headers=staff["headers"],
        )
        assert polled.status_code == 200, polled.text
        body = polled.json()
        assert [e["data"]["on_hand"] for e in body["events"]] == [8]
        empty = await client.get(
            "/v1/poll",
            params={"channels": "stock", "timeout": 0, "since": body["position"]},
            headers=staff["headers"],
        )
        assert empty.status_code == 204
        assert empty.headers["X-Stream-Position"] == str(body["position"])


async def test_too_old_position_means_reload_the_snapshot(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    database_url: str,
    ctx: AppContext,
    settings: Settings,
    clock: FixedClock,
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    async with running_relay(database_url):
        for quantity in (1, 2, 3):
            await adjust(client, staff["headers"], product_id, location_id, quantity)
        await settle(ctx)
        async with ctx.db.engine.begin() as conn:  # retention pruned the oldest events
            await conn.execute(text("DELETE FROM outbox_events WHERE position <= 2"))
        # This process still has them in memory: a short gap is served from the window.
        recent = await client.get(
            "/v1/poll", params={"channels": "stock", "since": 0}, headers=staff["headers"]
        )
        assert [e["data"]["on_hand"] for e in recent.json()["events"]] == [5, 6, 8, 11]
        # A process started since (or any other instance) only has the table: reset.
        async with live_app(settings, clock) as (other, _, _):
            transport = httpx.ASGITransport(app=other)
            async with httpx.AsyncClient(
                transport=transport, base_url="https://shelfwise.test"
            ) as fresh:
                gone = await fresh.get(
                    "/v1/poll", params={"channels": "stock", "since": 0}, headers=staff["headers"]
                )
                assert gone.status_code == 410
                assert gone.json()["code"] == "position_too_old"
                assert gone.json()["snapshot"] == "/v1/stock"
                snapshot = await fresh.get(
                    "/v1/stock", params={"product_id": product_id}, headers=staff["headers"]
                )
                continue_from = int(snapshot.headers["X-Stream-Position"])
                assert snapshot.json()["data"][0]["on_hand"] == 11
                await adjust(client, staff["headers"], product_id, location_id, 1)
                after = await fresh.get(
                    "/v1/poll",
                    params={"channels": "stock", "timeout": 10, "since": continue_from},
                    headers=staff["headers"],
                )
                assert [e["data"]["on_hand"] for e in after.json()["events"]] == [12]


async def test_customers_see_only_their_own_orders(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    ctx: AppContext,
    database_url: str,
) -> None:
    other = await make_user(ctx, Role.CUSTOMER)
    product_id, _ = await stocked(client, staff["headers"])
    async with running_relay(database_url):
        start = await client.get(
            "/v1/poll", params={"channels": "orders"}, headers=customer["headers"]
        )
        since = start.json()["position"]
        for who in (other, customer):
            placed = await client.post(
                "/v1/orders",
                json={"lines": [{"product_id": product_id, "quantity": 1}]},
                headers={**who["headers"], "Idempotency-Key": uuid.uuid4().hex},
            )
            assert placed.status_code == 201
            if who is customer:
                mine = placed.json()["id"]
        seen = await client.get(
            "/v1/poll",
            params={"channels": "orders", "since": since, "timeout": 10},
            headers=customer["headers"],
        )
        assert [e["data"]["order_id"] for e in seen.json()["events"]] == [mine]
        staff_view = await client.get(
            "/v1/poll",
            params={"channels": "orders", "since": since, "timeout": 10},
            headers=staff["headers"],
        )
        assert len(staff_view.json()["events"]) == 2
    forbidden = await client.get(
        "/v1/poll", params={"channels": "imports:1"}, headers=customer["headers"]
    )
    assert forbidden.status_code == 403
    unknown = await client.get(
        "/v1/poll", params={"channels": "everything"}, headers=customer["headers"]
    )
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_channel"


async def test_websocket_protocol(
    client: httpx.AsyncClient, staff: dict[str, Any], database_url: str, app: Any
) -> None:
    product_id, location_id = await stocked(client, staff["headers"])
    token = staff["headers"]["Authorization"].removeprefix("Bearer ")
    async with running_relay(database_url), serve(app) as address:
        async with websockets.connect(f"ws://{address}/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            await ws.send(json.dumps({"type": "subscribe", "channels": ["nope"]}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["code"] == "unknown_channel"
            await ws.send(json.dumps({"type": "subscribe", "channels": [f"stock:{product_id}"]}))
            subscribed = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert subscribed["type"] == "subscribed"
            await adjust(client, staff["headers"], product_id, location_id, 4)
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert (event["type"], event["event"]) == ("event", "stock.changed")
            assert event["data"]["on_hand"] == 9
            assert event["position"] > subscribed["position"]
            await ws.send(json.dumps({"type": "ping"}))
            pong = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert pong == {"type": "pong", "position": event["position"]}
        async with websockets.connect(f"ws://{address}/v1/ws") as ws:
            await ws.send(json.dumps({"type": "auth", "token": "not-a-token"}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1008


async def test_revoked_session_closes_the_stream(
    settings: Settings, clock: FixedClock, database_url: str
) -> None:
    async with live_app(
        settings, clock, live_recheck_seconds=0.05, live_heartbeat_seconds=0.05
    ) as (app, ctx, address):
        user = await make_user(ctx, Role.STAFF)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            signed_in = await c.post(
                "/v1/auth/session", json={"email": user["email"], "password": PASSWORD}
            )
            assert signed_in.status_code == 200, signed_in.text
            cookie = signed_in.cookies["__Host-session"]
            async with httpx.AsyncClient(base_url=f"http://{address}", timeout=10) as http:
                headers = {"Cookie": f"__Host-session={cookie}"}
                async with http.stream(
                    "GET", "/v1/stream?channels=stock", headers=headers
                ) as response:
                    assert response.status_code == 200
                    events = sse_events(response)
                    [sign_in] = [
                        s
                        for s in (await c.get("/v1/auth/sessions", headers=user["headers"])).json()
                        if s["kind"] == "session"
                    ]
                    revoked = await c.delete(
                        f"/v1/auth/sessions/{sign_in['id']}", headers=user["headers"]
                    )
                    assert revoked.status_code == 204
                    [closed] = await take(events, 1, kind="close")
                    assert closed.data["reason"] == "revoked"


async def test_slow_client_is_disconnected_without_hurting_others(
    settings: Settings, clock: FixedClock, database_url: str
) -> None:
    async with live_app(settings, clock, live_queue_limit=10) as (app, ctx, _):
        user = await make_user(ctx, Role.STAFF)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            product_id, location_id = await stocked(c, user["headers"])
            from shelfwise.identity.principal import Principal, PrincipalKind
            from shelfwise.identity.scopes import ROLE_SCOPES

            principal = Principal(
                PrincipalKind.USER, user["id"], ROLE_SCOPES[Role.STAFF], Role.STAFF
            )
            hub = ctx.hub
            assert hub is not None
            async with running_relay(database_url):
                await settle(ctx)
            slow, _ = await hub.subscribe(
                parse_channels(["stock"]), principal, since=None, transport="sse"
            )
            fast, _ = await hub.subscribe(
                parse_channels(["stock"]), principal, since=None, transport="sse"
            )
            async with running_relay(database_url):
                received = 0
                for _ in range(15):
                    await adjust(c, user["headers"], product_id, location_id, 1)
                    while await fast.next(5.0) is not None:
                        received += 1
                        if fast.pending() == 0:
                            break
            assert received == 15
            assert slow.closed_reason == "slow_consumer"
            with pytest.raises(Closed):
                await slow.next(0.0)
