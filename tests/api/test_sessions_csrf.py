"""Browser sessions and CSRF, against both session stores: PostgreSQL (the default) and a
real `redis-server` (when `REDIS_URL` is set).

Every test here runs twice, once per store, through the module's parametrized `settings`
fixture: the behaviour the dashboard relies on must not depend on where sessions live.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.identity.sessions import PostgresSessionStore, RedisSessionStore, token_hash
from tests.redis_support import redis_server
from tests.security_support import (
    FOREIGN_ORIGIN,
    PROBLEM,
    SAME_ORIGIN,
    client_for,
    metric,
    set_cookies,
    sign_in,
    use_cookie,
)

SESSION_COOKIE = "__Host-session"
BROWSER = {"Origin": SAME_ORIGIN}


@pytest.fixture(params=["postgres", "redis"])
async def settings(
    request: pytest.FixtureRequest, settings: Settings, tmp_path: Path
) -> AsyncIterator[Settings]:
    if request.param == "postgres":
        yield settings
        return
    async with redis_server(tmp_path) as url:
        yield settings.model_copy(update={"redis_url": url})


async def signed_in(client: httpx.AsyncClient, email: str) -> tuple[str, str]:
    """Sign in as a browser would; returns (session cookie value, CSRF token)."""
    response = await sign_in(client, email, headers=BROWSER)
    assert response.status_code == 200, response.text
    return set_cookies(response)[SESSION_COOKIE].value, response.json()["csrf_token"]


def unsafe_headers(csrf: str | None, **extra: str) -> dict[str, str]:
    headers = {"Origin": SAME_ORIGIN, **extra}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


async def create_location(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(
        "/v1/locations",
        json={"code": f"S-{uuid.uuid4().hex[:8]}", "name": "Session test"},
        headers=headers,
    )


def assert_csrf_refused(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["code"] == "csrf_failed"


@pytest.fixture
async def second_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Another browser."""
    async with client_for(app) as c:
        yield c


async def test_sign_in_sets_a_host_session_cookie_and_returns_a_csrf_token(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any], clock: FixedClock
) -> None:
    expected_store = RedisSessionStore if ctx.settings.redis_url else PostgresSessionStore
    # Redis sessions are wrapped to fail closed (shared_state.FailClosedSessions).
    assert isinstance(getattr(ctx.session_store, "inner", ctx.session_store), expected_store)

    response = await sign_in(client, staff["email"], headers=BROWSER)
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    body = response.json()
    assert body["user"]["id"] == str(staff["id"])
    assert "password_hash" not in body["user"]
    assert body["csrf_token"]

    cookie = set_cookies(response)[SESSION_COOKIE]
    assert cookie.value
    assert cookie.value not in response.text
    attrs = cookie.attributes
    assert "secure" in attrs
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "lax"
    assert attrs["path"] == "/"
    assert "domain" not in attrs
    absolute = timedelta(hours=ctx.settings.session_absolute_hours)
    assert int(attrs["max-age"]) == int(absolute.total_seconds())

    # A safe request with the cookie alone works: no CSRF token needed to read.
    me = await client.get("/v1/auth/me")
    assert me.status_code == 200, me.text
    assert me.json()["user"]["email"] == staff["email"]
    csrf = await client.get("/v1/auth/csrf")
    assert csrf.json() == {"csrf_token": body["csrf_token"]}

    # Only the token's hash is stored, wherever sessions live.
    async with ctx.db.engine.connect() as conn:
        hashes = list(await conn.scalars(text("SELECT token_hash FROM user_sessions")))
    if ctx.redis is not None:
        assert hashes == []  # really in Redis, not in PostgreSQL
        keys = [k.decode() for k in await ctx.redis.keys("shelfwise:session*")]
        assert any(k.endswith(token_hash(cookie.value)) for k in keys)
        assert not any(cookie.value in k for k in keys)
        for key in keys:
            assert cookie.value.encode() not in (await ctx.redis.get(key) or b"")
    else:
        assert hashes == [token_hash(cookie.value)]


async def test_csrf_accepted_and_rejected_cases(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    staff: dict[str, Any],
    admin: dict[str, Any],
) -> None:
    _, csrf = await signed_in(client, staff["email"])
    _, other_csrf = await signed_in(second_client, admin["email"])
    assert other_csrf != csrf
    refused_before = sum(
        metric("shelfwise_security_events_total", kind=f"csrf_{reason}")
        for reason in ("origin_mismatch", "no_provenance", "token_mismatch")
    )

    refused_cases: dict[str, dict[str, str]] = {
        "no token": unsafe_headers(None),
        "empty token": unsafe_headers(""),
        "token, foreign origin": unsafe_headers(csrf, Origin=FOREIGN_ORIGIN),
        "token, origin of another scheme": unsafe_headers(csrf, Origin="http://shelfwise.test"),
        "token, no origin, no Sec-Fetch-Site": {"X-CSRF-Token": csrf},
        "token, no origin, cross-site fetch": {
            "X-CSRF-Token": csrf,
            "Sec-Fetch-Site": "cross-site",
        },
        "token, no origin, same-site fetch": {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-site"},
        "another session's token": unsafe_headers(other_csrf),
        "tampered token": unsafe_headers(csrf[:-2] + ("AA" if csrf[-2:] != "AA" else "BB")),
    }
    for case, headers in refused_cases.items():
        response = await create_location(client, headers)
        assert response.status_code == 403, (case, response.text)
        assert_csrf_refused(response)
    refused_after = sum(
        metric("shelfwise_security_events_total", kind=f"csrf_{reason}")
        for reason in ("origin_mismatch", "no_provenance", "token_mismatch")
    )
    assert refused_after - refused_before == len(refused_cases)

    accepted_cases: dict[str, dict[str, str]] = {
        "token, same origin": unsafe_headers(csrf),
        "token, no origin, same-origin fetch": {
            "X-CSRF-Token": csrf,
            "Sec-Fetch-Site": "same-origin",
        },
    }
    for case, headers in accepted_cases.items():
        response = await create_location(client, headers)
        assert response.status_code == 201, (case, response.text)

    # Every other unsafe method is covered too: a DELETE without the token is refused.
    assert_csrf_refused(await client.delete(f"/v1/auth/sessions/{uuid.uuid4()}"))

    # Bearer requests are not cookie-borne, so no CSRF token or Origin is asked of them —
    # even from a foreign origin, and even when a session cookie rides along.
    for headers in ({}, {"Origin": FOREIGN_ORIGIN}):
        response = await create_location(client, {**staff["headers"], **headers})
        assert response.status_code == 201, response.text


async def test_signing_in_again_rotates_the_session(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    first, first_csrf = await signed_in(client, staff["email"])
    assert client.cookies.get(SESSION_COOKIE) == first
    # The browser sends its current cookie along with the new sign-in.
    second, second_csrf = await signed_in(client, staff["email"])
    assert second != first
    assert second_csrf != first_csrf  # the CSRF token is bound to the session

    use_cookie(client, SESSION_COOKIE, first)
    old = await client.get("/v1/auth/me")
    assert old.status_code == 401
    assert old.headers["content-type"] == PROBLEM
    use_cookie(client, SESSION_COOKIE, second)
    assert (await client.get("/v1/auth/me")).status_code == 200
    # The old session's CSRF token is no good for the new one.
    assert_csrf_refused(await create_location(client, unsafe_headers(first_csrf)))
    assert (await create_location(client, unsafe_headers(second_csrf))).status_code == 201


async def test_session_idle_timeout(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any], clock: FixedClock
) -> None:
    idle = timedelta(minutes=ctx.settings.session_idle_minutes)
    await signed_in(client, staff["email"])
    for _ in range(3):  # activity keeps it alive past the idle limit...
        clock.advance(idle - timedelta(minutes=1))
        assert (await client.get("/v1/auth/me")).status_code == 200
    clock.advance(idle)  # ...inactivity ends it
    assert (await client.get("/v1/auth/me")).status_code == 401


async def test_session_absolute_timeout(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any], clock: FixedClock
) -> None:
    absolute = timedelta(hours=ctx.settings.session_absolute_hours)
    step = timedelta(minutes=ctx.settings.session_idle_minutes - 10)
    await signed_in(client, staff["email"])
    elapsed = timedelta(0)
    while elapsed + step < absolute:
        clock.advance(step)
        elapsed += step
        assert (await client.get("/v1/auth/me")).status_code == 200, elapsed
    clock.advance(absolute - elapsed)  # active all along, but the day is over
    assert (await client.get("/v1/auth/me")).status_code == 401


async def test_sign_out_really_ends_the_session(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    token, csrf = await signed_in(client, staff["email"])
    # Sign-out is an unsafe request like any other: it needs the CSRF token.
    assert_csrf_refused(await client.delete("/v1/auth/session", headers={"Origin": SAME_ORIGIN}))
    assert (await client.get("/v1/auth/me")).status_code == 200

    out = await client.delete("/v1/auth/session", headers=unsafe_headers(csrf))
    assert out.status_code == 204
    cleared = set_cookies(out)[SESSION_COOKIE]
    assert cleared.value == ""
    assert cleared.attributes["max-age"] == "0"
    assert client.cookies.get(SESSION_COOKIE) is None

    # A copy of the cookie kept elsewhere is worthless: the server ended the session.
    use_cookie(client, SESSION_COOKIE, token)
    assert (await client.get("/v1/auth/me")).status_code == 401
    assert (await create_location(client, unsafe_headers(csrf))).status_code == 401


async def test_privilege_change_disable_and_admin_revocation_end_sessions(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    admin: dict[str, Any],
) -> None:
    await signed_in(client, staff["email"])
    promoted = await client.patch(
        f"/v1/users/{staff['id']}",
        json={"role": "admin"},
        headers=admin["headers"],  # Bearer: takes precedence over the cookie
    )
    assert promoted.status_code == 200, promoted.text
    # Even a promotion ends the session: the new privileges need a new sign-in.
    assert (await client.get("/v1/auth/me")).status_code == 401

    await signed_in(second_client, customer["email"])
    disabled = await second_client.patch(
        f"/v1/users/{customer['id']}", json={"is_active": False}, headers=admin["headers"]
    )
    assert disabled.status_code == 200
    assert (await second_client.get("/v1/auth/me")).status_code == 401

    client.cookies.clear()
    await signed_in(client, staff["email"])
    await signed_in(second_client, staff["email"])
    second_client.cookies.clear()  # keep second_client's cookie out of the next request
    ended = await second_client.delete(
        f"/v1/users/{staff['id']}/sessions", headers=admin["headers"]
    )
    assert ended.status_code == 200
    assert ended.json() == {"sessions": 2, "refresh_families": 0}
    assert (await client.get("/v1/auth/me")).status_code == 401


async def test_sessions_list_marks_current_and_others_can_be_revoked(
    client: httpx.AsyncClient,
    second_client: httpx.AsyncClient,
    staff: dict[str, Any],
    clock: FixedClock,
) -> None:
    _, csrf = await signed_in(client, staff["email"])
    clock.advance(timedelta(seconds=5))
    await signed_in(second_client, staff["email"])
    failed = await client.post(
        "/v1/auth/login", json={"email": staff["email"], "password": "x" * 12}
    )
    assert failed.status_code == 401  # a failed token login adds nothing

    listed = (await client.get("/v1/auth/sessions")).json()
    assert [(s["kind"], s["current"]) for s in listed] == [
        ("session", True),
        ("session", False),
    ]
    assert all(s["user_agent"].startswith("python-httpx") for s in listed)
    from_other = (await second_client.get("/v1/auth/sessions")).json()
    assert [s["current"] for s in from_other] == [False, True]
    other_id = listed[1]["id"]

    # Revoking is an unsafe request: CSRF applies.
    assert_csrf_refused(await client.delete(f"/v1/auth/sessions/{other_id}"))
    revoked = await client.delete(f"/v1/auth/sessions/{other_id}", headers=unsafe_headers(csrf))
    assert revoked.status_code == 204
    assert (await second_client.get("/v1/auth/me")).status_code == 401
    assert [s["id"] for s in (await client.get("/v1/auth/sessions")).json()] == [listed[0]["id"]]

    # Bearer callers see the sessions too, none of them "current".
    bearer_view = await client.get("/v1/auth/sessions", headers=staff["headers"])
    assert [s["current"] for s in bearer_view.json()] == [False]
