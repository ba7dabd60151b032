"""The edge layer (`http/edge.py`): five middlewares folded into one keep their order's
guarantees — a crash below is a counted, id-carrying problem+json 500 with the security
headers; a route's own header wins; the request id replaces any the app set."""

from __future__ import annotations

import httpx
import pytest
import structlog
from starlette.types import Receive, Scope, Send
from structlog.testing import capture_logs

from shelfwise.http.edge import EdgeMiddleware
from shelfwise.observability.metrics import HTTP_IN_FLIGHT, HTTP_REQUESTS


async def crash(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("boom")


async def crash_mid_body(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise RuntimeError("boom after the headers")


async def framed(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"x-frame-options", b"SAMEORIGIN"),
        (b"x-request-id", b"set-by-the-app"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"<p>hi</p>"})


def client_for(app: EdgeMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=True),
        base_url="http://edge.test",
    )


def count(route: str, status: str) -> float:
    value = HTTP_REQUESTS.labels("GET", route, status)._value.get()
    return float(value)


async def test_a_crash_below_is_a_counted_problem_with_the_id_and_security_headers() -> None:
    before = count("<unmatched>", "500")
    in_flight = HTTP_IN_FLIGHT._value.get()
    async with client_for(EdgeMiddleware(crash, access_log=True)) as client:
        response = await client.get("/boom", headers={"X-Request-ID": "req-12345678"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["request_id"] == "req-12345678"
    assert response.headers["x-request-id"] == "req-12345678"
    assert response.headers["server-timing"].startswith("app;dur=")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "strict-transport-security" not in response.headers
    assert count("<unmatched>", "500") == before + 1
    assert HTTP_IN_FLIGHT._value.get() == in_flight


async def test_the_apps_own_headers_win_and_the_id_is_the_edges() -> None:
    async with client_for(EdgeMiddleware(framed, hsts=True)) as client:
        response = await client.get("/page", headers={"X-Request-ID": "bad id!"})
    assert response.headers["x-frame-options"] == "SAMEORIGIN"  # setdefault, not set
    ids = response.headers.get_list("x-request-id")
    assert len(ids) == 1
    assert ids[0] not in ("set-by-the-app", "bad id!")  # a malformed incoming id is replaced
    assert len(ids[0]) == 32
    assert "'nonce-" in response.headers["content-security-policy"]  # an HTML page's policy
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_a_crash_after_the_headers_is_not_answered_twice() -> None:
    before = count("<unmatched>", "200")
    async with client_for(EdgeMiddleware(crash_mid_body)) as client:
        with pytest.raises(RuntimeError, match="after the headers"):
            await client.get("/half")
    assert count("<unmatched>", "200") == before + 1  # counted with the status it sent


async def test_the_access_line_follows_each_new_logging_configuration() -> None:
    app = EdgeMiddleware(framed, access_log=True)
    async with client_for(app) as client:
        for request_id in ("first-capture-01", "second-capture-02"):
            with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
                await client.get("/page", headers={"X-Request-ID": request_id})
            lines = [(entry["event"], entry["request_id"], entry["status"]) for entry in logs]
            assert lines == [("request", request_id, 200)]
