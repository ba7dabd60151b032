"""The per-request deadline (`http/timeouts.py`): one timer per process, not one per
request, and the same answers as before — 503 for a slow app, 408 for a stalled body, the
server's abort once the headers went out — while a cancellation that is not the deadline's
(a client gone, a shutdown) passes through untouched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from shelfwise.http.timeouts import RequestTimeoutMiddleware

QUICK = 0.05  # seconds: the deadline of these tests
PATIENCE = 10.0  # how long a test waits for an answer that is due after QUICK


async def hang(scope: Scope, receive: Receive, send: Send) -> None:
    await asyncio.Event().wait()  # never set: only the deadline ends this


async def hang_after_headers(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.Event().wait()


async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
    while (await receive()).get("more_body", False):
        pass
    await ok(scope, receive, send)


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def client_for(app: RequestTimeoutMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t.test")


async def test_a_slow_app_is_answered_503_at_its_deadline() -> None:
    async with client_for(RequestTimeoutMiddleware(hang, seconds=QUICK)) as client:
        response = await asyncio.wait_for(client.get("/slow"), PATIENCE)
    assert response.status_code == 503
    assert response.json()["code"] == "request_timeout"
    assert response.headers["retry-after"] == "1"


async def test_a_body_that_stops_arriving_is_408_and_closes() -> None:
    async def stalled() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.Event().wait()

    async with client_for(RequestTimeoutMiddleware(read_body, seconds=QUICK)) as client:
        response = await asyncio.wait_for(client.post("/upload", content=stalled()), PATIENCE)
    assert response.status_code == 408
    assert response.json()["code"] == "request_body_timeout"
    assert response.headers["connection"] == "close"


async def test_past_the_headers_the_deadline_aborts_instead_of_answering() -> None:
    app = RequestTimeoutMiddleware(hang_after_headers, seconds=QUICK)
    send_messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        send_messages.append(message)

    scope = {"type": "http", "path": "/half", "method": "GET", "headers": []}
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(app(scope, receive, send), PATIENCE)
    assert [m["type"] for m in send_messages] == ["http.response.start"]


async def test_many_requests_share_one_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    timers = 0
    call_at = loop.call_at

    def counted(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        nonlocal timers
        timers += 1
        return call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counted)
    async with client_for(RequestTimeoutMiddleware(ok, seconds=30)) as client:
        responses = await asyncio.gather(*(client.get(f"/r/{i}") for i in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert timers == 1  # the first request's; a per-request timeout would have set 200


async def test_a_cancellation_that_is_not_the_deadline_passes_through() -> None:
    entered = asyncio.Event()

    async def wait(scope: Scope, receive: Receive, send: Send) -> None:
        entered.set()
        await asyncio.Event().wait()

    app = RequestTimeoutMiddleware(wait, seconds=30)
    scope = {"type": "http", "path": "/gone", "method": "GET", "headers": []}

    async def nothing() -> dict[str, Any]:
        raise AssertionError("not read")

    async def unused(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is answered to a cancelled request")

    request = asyncio.create_task(app(scope, nothing, unused))
    await asyncio.wait_for(entered.wait(), PATIENCE)
    request.cancel()  # the client went away, or the server shuts down
    with pytest.raises(asyncio.CancelledError):
        await request
    assert request.cancelled()


async def test_a_request_after_an_expiry_gets_a_full_deadline_again() -> None:
    answered = asyncio.Event()

    async def slow_once(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            await hang(scope, receive, send)
        await ok(scope, receive, send)
        answered.set()

    async with client_for(RequestTimeoutMiddleware(slow_once, seconds=QUICK)) as client:
        first = await asyncio.wait_for(client.get("/slow"), PATIENCE)
        second = await asyncio.wait_for(client.get("/fast"), PATIENCE)
    assert (first.status_code, second.status_code) == (503, 200)
    assert answered.is_set()


def test_the_watch_follows_the_app_to_a_new_event_loop() -> None:
    app = RequestTimeoutMiddleware(hang, seconds=QUICK)

    async def one_slow_request() -> int:
        async with client_for(app) as client:
            return (await asyncio.wait_for(client.get("/slow"), PATIENCE)).status_code

    # A timer set on the first loop never fires there again; the second loop gets its own.
    assert [asyncio.run(one_slow_request()) for _ in range(2)] == [503, 503]
