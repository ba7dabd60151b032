"""Rate limits and DoS defences, each against an app built with strict settings.

Per-IP login limit, per-account lockout that treats unknown emails the same, the
anonymous per-IP and authenticated per-principal budgets, the trusted-proxy rule for the
client IP, the per-client concurrency cap, the body size limit and the request timeout.
Windows are a minute long and every test finishes well inside one.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from shelfwise.clock import FixedClock
from shelfwise.identity.models import Role
from tests.security_support import (
    PROBLEM,
    bearer,
    build_settings,
    client_for,
    context_of,
    login,
    metric,
    running_app,
)
from tests.support import PASSWORD, make_user, wait_until

# IETF draft form: `"name";q=3;w=60` and `"name";r=2;t=41`.
POLICY_HEADER = re.compile(r'^"(?P<name>[a-z_]+)";q=(?P<q>\d+);w=(?P<w>\d+)$')
STATE_HEADER = re.compile(r'^"(?P<name>[a-z_]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def policy_of(response: httpx.Response) -> dict[str, Any]:
    policy = POLICY_HEADER.match(response.headers["ratelimit-policy"])
    state = STATE_HEADER.match(response.headers["ratelimit"])
    assert policy, response.headers["ratelimit-policy"]
    assert state, response.headers["ratelimit"]
    assert policy["name"] == state["name"]
    return {
        "name": policy["name"],
        "quota": int(policy["q"]),
        "window": int(policy["w"]),
        "remaining": int(state["r"]),
        "reset": int(state["t"]),
    }


def assert_limited(response: httpx.Response, policy: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["code"] == "rate_limited"
    assert body["policy"] == policy
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert policy_of(response)["name"] == policy
    assert policy_of(response)["remaining"] == 0


@pytest.fixture
async def strict(database_url: str, clock: FixedClock) -> AsyncIterator[Any]:
    """Call `await strict(**settings)` to get a running app; all are shut down after."""
    stack: list[Any] = []

    async def start(**overrides: Any) -> FastAPI:
        manager = running_app(build_settings(database_url, **overrides), clock)
        app = await manager.__aenter__()
        stack.append(manager)
        return app

    try:
        yield start
    finally:
        for manager in reversed(stack):
            await manager.__aexit__(None, None, None)


async def test_login_is_limited_per_ip_with_ietf_headers(strict: Any) -> None:
    app = await strict(rate_limit_login="3/minute")
    user = await make_user(context_of(app), Role.CUSTOMER)
    async with client_for(app) as client, client_for(app, peer="10.0.0.9") as elsewhere:
        remaining = []
        for attempt in range(3):
            # Different outcomes all count: success and failure alike.
            password = PASSWORD if attempt == 0 else f"wrong-password-{attempt}"
            response = await login(client, user["email"], password)
            assert response.status_code == (200 if attempt == 0 else 401), response.text
            limit = policy_of(response)
            assert (limit["name"], limit["quota"], limit["window"]) == ("login", 3, 60)
            assert response.headers["ratelimit-policy"] == '"login";q=3;w=60'
            remaining.append(limit["remaining"])
            assert "retry-after" not in response.headers
        assert remaining == [2, 1, 0]

        before = metric("shelfwise_rate_limited_total", policy="login")
        limited = await login(client, user["email"])  # even the right password
        assert_limited(limited, "login")
        assert "access_token" not in limited.text
        assert metric("shelfwise_rate_limited_total", policy="login") == before + 1
        # Session sign-in shares the login budget.
        assert_limited(
            await client.post(
                "/v1/auth/session", json={"email": user["email"], "password": PASSWORD}
            ),
            "login",
        )

        # Another client IP has its own budget.
        assert (await login(elsewhere, user["email"])).status_code == 200


async def test_register_and_refresh_have_their_own_route_limits(strict: Any) -> None:
    app = await strict(rate_limit_register="2/minute", rate_limit_refresh="2/minute")
    async with client_for(app) as client:
        for i in range(2):
            response = await client.post(
                "/v1/auth/register",
                json={"email": f"r{i}-{uuid.uuid4().hex[:6]}@example.com", "password": PASSWORD},
            )
            assert response.status_code == 201, response.text
            assert policy_of(response)["name"] == "register"
        assert_limited(
            await client.post(
                "/v1/auth/register", json={"email": "late@example.com", "password": PASSWORD}
            ),
            "register",
        )

        for _ in range(2):
            response = await client.post("/v1/auth/token/refresh", json={"refresh_token": "x" * 43})
            assert response.status_code == 401
        assert_limited(
            await client.post("/v1/auth/token/refresh", json={"refresh_token": "x" * 43}),
            "refresh",
        )


async def test_account_lockout_after_failures_and_unknown_emails_look_the_same(
    strict: Any,
) -> None:
    app = await strict(login_failures_per_account="3/minute;10/hour")
    user = await make_user(context_of(app), Role.CUSTOMER)
    unknown = f"nobody-{uuid.uuid4().hex[:8]}@example.test"

    async def attempts(client: httpx.AsyncClient, email: str) -> list[httpx.Response]:
        return [await login(client, email, f"wrong-password-{i}") for i in range(3)]

    async with client_for(app) as client:
        before = metric("shelfwise_security_events_total", kind="login_lockout")
        for email in (user["email"], unknown):
            failures = await attempts(client, email)
            assert [r.status_code for r in failures] == [401, 401, 401]

        locked = await login(client, user["email"], PASSWORD)  # the right password, too late
        assert_limited(locked, "login_failures")
        assert "access_token" not in locked.text
        also_locked = await login(client, unknown, PASSWORD)
        assert_limited(also_locked, "login_failures")
        assert metric("shelfwise_security_events_total", kind="login_lockout") == before + 2

        # Identical in everything but the request id and the exact seconds to wait.
        def shape(response: httpx.Response) -> tuple[Any, ...]:
            body = dict(response.json())
            for volatile in ("request_id", "detail"):
                body.pop(volatile)
            names = sorted(
                k for k in response.headers if k not in {"x-request-id", "content-length"}
            )
            return (
                response.status_code,
                body,
                names,
                response.headers["ratelimit-policy"],
                policy_of(response)["remaining"],
            )

        assert shape(locked) == shape(also_locked)
        assert locked.headers["ratelimit-policy"] == '"login_failures";q=3;w=60'
        # Lockouts are per email as typed (normalised), not per IP: others still sign in.
        assert (await login(client, "  " + user["email"].upper(), PASSWORD)).status_code == 429
        other = await make_user(context_of(app), Role.CUSTOMER)
        assert (await login(client, other["email"])).status_code == 200


async def test_anonymous_requests_are_limited_per_ip(strict: Any) -> None:
    app = await strict(rate_limit_anonymous="3/minute")
    async with client_for(app) as client, client_for(app, peer="10.0.0.9") as elsewhere:
        statuses = [(await client.get("/v1/products")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        limited = await client.get("/v1/products")
        assert_limited(limited, "anonymous")
        assert limited.headers["ratelimit-policy"] == '"anonymous";q=3;w=60'
        # Health checks and metrics are never limited (probes must not be refused).
        for path in ("/healthz", "/metrics"):
            assert (await client.get(path)).status_code == 200
        assert (await elsewhere.get("/v1/products")).status_code == 200


async def test_authenticated_requests_are_limited_per_principal(strict: Any) -> None:
    app = await strict(rate_limit_authenticated="3/minute", rate_limit_anonymous="2/minute")
    ctx = context_of(app)
    alice = await make_user(ctx, Role.CUSTOMER)
    bob = await make_user(ctx, Role.CUSTOMER)
    async with client_for(app) as client:
        # Authenticated calls do not spend the (smaller) anonymous budget of the IP.
        for expected_remaining in (2, 1, 0):
            response = await client.get("/v1/auth/me", headers=alice["headers"])
            assert response.status_code == 200
            limit = policy_of(response)
            assert (limit["name"], limit["remaining"]) == ("authenticated", expected_remaining)
        assert_limited(await client.get("/v1/auth/me", headers=alice["headers"]), "authenticated")
        # A fresh token for the same user is the same principal: still limited.
        token, _ = ctx.tokens.issue(user_id=alice["id"], role="customer", now=ctx.clock.now())
        assert_limited(await client.get("/v1/auth/me", headers=bearer(token)), "authenticated")
        # Bob, on the same IP, has his own budget.
        assert (await client.get("/v1/auth/me", headers=bob["headers"])).status_code == 200


async def test_failed_authentication_spends_the_ip_budget(strict: Any) -> None:
    app = await strict(rate_limit_anonymous="3/minute")
    async with client_for(app) as client:
        statuses = [
            (await client.get("/v1/auth/me", headers=bearer(f"guess-{i}"))).status_code
            for i in range(3)
        ]
        assert statuses == [401, 401, 401]
        # Guessing tokens does not get a fresh budget per guess: the IP is cut off.
        assert_limited(await client.get("/v1/auth/me", headers=bearer("guess-4")), "anonymous")


async def test_forwarded_for_counts_only_from_trusted_proxies(strict: Any) -> None:
    app = await strict(rate_limit_anonymous="2/minute", trusted_proxies=["10.0.0.5"])
    user = await make_user(context_of(app), Role.CUSTOMER)
    async with (
        client_for(app, peer="10.0.0.5") as proxy,
        client_for(app, peer="10.0.0.66") as direct,
    ):

        async def via(client: httpx.AsyncClient, forwarded_for: str) -> int:
            response = await client.get("/v1/products", headers={"X-Forwarded-For": forwarded_for})
            return response.status_code

        # Behind the trusted proxy, each real client has its own budget...
        assert [await via(proxy, "203.0.113.7") for _ in range(3)] == [200, 200, 429]
        assert await via(proxy, "203.0.113.8") == 200
        # ...keyed by the last hop the proxy saw, not a value the client prepended.
        assert await via(proxy, "198.51.100.1, 203.0.113.7") == 429

        # A direct client cannot pick a new identity per request with the header.
        statuses = [await via(direct, f"192.0.2.{i}") for i in range(1, 4)]
        assert statuses == [200, 200, 429]

    # The recorded sign-in IP follows the same rule (fresh clients: budgets are spent).
    async with (
        client_for(app, peer="10.0.0.5") as proxy,
        client_for(app, peer="10.0.0.67") as direct,
    ):
        for client, forwarded, expected in (
            (proxy, "203.0.113.50", "203.0.113.50"),
            (direct, "203.0.113.51", "10.0.0.67"),
        ):
            response = await client.post(
                "/v1/auth/login",
                json={"email": user["email"], "password": PASSWORD},
                headers={"X-Forwarded-For": forwarded},
            )
            assert response.status_code == 200, response.text
            listed = await client.get(
                "/v1/auth/sessions", headers=bearer(response.json()["access_token"])
            )
            assert listed.json()[-1]["ip"] == expected


async def test_concurrent_requests_per_client_are_capped(strict: Any) -> None:
    app = await strict(max_concurrent_requests_per_client=2)
    entered = 0
    release = asyncio.Event()

    @app.get("/test/block", include_in_schema=False)
    async def block() -> dict[str, str]:
        nonlocal entered
        entered += 1
        await release.wait()
        return {"status": "released"}

    async with client_for(app) as client, client_for(app, peer="10.0.0.9") as elsewhere:
        held = [asyncio.create_task(client.get("/test/block")) for _ in range(2)]
        try:

            async def both_entered() -> bool:
                return entered == 2

            await wait_until(both_entered, timeout=10, what="two blocked requests")
            before = metric("shelfwise_rate_limited_total", policy="concurrency")
            third = await client.get("/v1/products")
            assert third.status_code == 429
            assert third.headers["content-type"] == PROBLEM
            assert third.json()["code"] == "too_many_concurrent_requests"
            assert third.headers["retry-after"] == "1"
            assert metric("shelfwise_rate_limited_total", policy="concurrency") == before + 1
            # Another client is not affected by this one's slow requests.
            assert (await elsewhere.get("/v1/products")).status_code == 200
        finally:
            release.set()
            done = await asyncio.gather(*held)
        assert [r.status_code for r in done] == [200, 200]
        # The slots are given back.
        assert (await client.get("/v1/products")).status_code == 200


async def test_open_event_streams_do_not_count_as_requests_in_flight(strict: Any) -> None:
    """Two open streams from one IP leave its in-flight cap (2) free for requests."""
    app = await strict(max_concurrent_requests_per_client=2)
    streaming = 0
    release = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        nonlocal streaming
        streaming += 1
        yield b": open\n\n"
        await release.wait()

    @app.get("/test/stream", include_in_schema=False)
    async def stream() -> StreamingResponse:
        return StreamingResponse(events(), media_type="text/event-stream")

    async with client_for(app) as client:
        held = [asyncio.create_task(client.get("/test/stream")) for _ in range(2)]
        try:

            async def both_streaming() -> bool:
                return streaming == 2

            await wait_until(both_streaming, timeout=10, what="two open streams")
            assert (await client.get("/v1/products")).status_code == 200
        finally:
            release.set()
            done = await asyncio.gather(*held)
        assert [r.status_code for r in done] == [200, 200]


async def test_oversized_bodies_are_refused_with_413(strict: Any) -> None:
    app = await strict(max_body_bytes=1024)
    async with client_for(app) as client:
        big = {"email": "a@example.test", "password": "p" * 2000}
        declared = await client.post("/v1/auth/login", json=big)
        assert declared.status_code == 413
        assert declared.headers["content-type"] == PROBLEM
        assert declared.json()["code"] == "payload_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 256  # no Content-Length: counted as it streams

        streamed = await client.post(
            "/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json()["code"] == "payload_too_large"

        small = await client.post(
            "/v1/auth/login", json={"email": "a@example.test", "password": "x"}
        )
        assert small.status_code == 401


async def test_slow_requests_time_out_with_503(strict: Any) -> None:
    app = await strict(request_timeout_seconds=0.2)
    never = asyncio.Event()

    @app.get("/test/hang", include_in_schema=False)
    async def hang() -> dict[str, str]:
        await never.wait()  # never set: only the server-side deadline ends this
        return {"status": "impossible"}

    async with client_for(app) as client:
        before = metric("shelfwise_request_timeouts_total", route="/test/hang")
        response = await asyncio.wait_for(client.get("/test/hang"), timeout=10)
        assert response.status_code == 503
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "request_timeout"
        assert response.headers["retry-after"] == "1"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert metric("shelfwise_request_timeouts_total", route="/test/hang") == before + 1
        # The app is fine afterwards.
        assert (await client.get("/v1/products")).status_code == 200
