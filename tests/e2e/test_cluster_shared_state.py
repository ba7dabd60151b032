"""Three instances behind one load balancer share every piece of client state, so no
sticky sessions are needed: a rate limit is the client's total (Redis), a browser session
and a refresh token made on one instance work on the others, and revoking either on any
instance ends it on all of them. Meanwhile 1,000 connections that never finish their headers
are closed by nginx (`client_header_timeout`).

Requests go to each instance directly, in turn, so which instance answers is certain; the
client address comes from X-Forwarded-For, as nginx sends it (the instances trust
127.0.0.1 as their proxy), which also keeps the two halves' budgets apart.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from shelfwise.identity.models import Role
from tests.cluster_support import running_cluster
from tests.e2e.cluster_load import user_maker
from tests.support import PASSWORD

pytestmark = pytest.mark.e2e

LOGIN_LIMIT = 6
SLOW_CLIENTS = 1_000  # issue 10: "1,000 connections that never finish their headers"


async def read_until_closed(readers: list[asyncio.StreamReader]) -> list[bytes]:
    """What each connection received before the server closed it (30 s at most)."""
    return await asyncio.wait_for(asyncio.gather(*(reader.read() for reader in readers)), 30)


async def test_limits_sessions_and_revocation_hold_across_three_instances(
    database_url: str, tmp_path: Path
) -> None:
    async with user_maker(database_url) as make:
        user = await make(Role.CUSTOMER)
    env = {"SHELFWISE_RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute"}
    async with (
        running_cluster(database_url, tmp_path, apis=3, app_env=env) as cluster,
        AsyncExitStack() as stack,
    ):
        api = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=cluster.api_url(name), timeout=10.0)
            )
            for name in cluster.apis
        ]

        # Meanwhile, slow clients that never finish their headers: nginx closes them.
        port = int(cluster.http_url.rsplit(":", 1)[1])
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(SLOW_CLIENTS)]
        for _, writer in slow:
            writer.write(b"GET /v1/products HTTP/1.1\r\nHost: shelfwise\r\nX-Slow: ")
        slow_started = time.monotonic()
        readers = [reader for reader, _ in slow]
        slow_closed = asyncio.create_task(read_until_closed(readers))

        # 0. Each instance names itself in its metrics and in every log line.
        for name, instance in zip(cluster.apis, api, strict=True):
            metrics = (await instance.get("/metrics")).text
            assert f'shelfwise_instance_info{{instance_id="{name}",role="api"}} 1.0' in metrics
            assert f'"instance": "{name}"' in cluster.log(name)

        # 1. One login budget for the client, whichever instance it reaches.
        flooder = {"X-Forwarded-For": "203.0.113.10"}
        statuses = []
        for attempt in range(LOGIN_LIMIT + 3):
            response = await api[attempt % 3].post(
                "/v1/auth/login",
                json={
                    "email": f"nobody-{uuid.uuid4().hex[:8]}@example.com",
                    "password": "x" * 12,
                },
                headers=flooder,
            )
            statuses.append(response.status_code)
        assert statuses == [401] * LOGIN_LIMIT + [429] * 3
        # Through nginx too (its X-Forwarded-For carries the same address onwards).
        async with cluster.client() as through_nginx:
            refused = await through_nginx.post(
                "/v1/auth/login",
                json={"email": "late@example.com", "password": "x" * 12},
                headers=flooder,
            )
        assert refused.status_code == 429

        # 2. A browser session made on api-1 works on api-2 and api-3.
        browser = {"X-Forwarded-For": "203.0.113.20"}
        signed_in = await api[0].post(
            "/v1/auth/session",
            json={"email": user["email"], "password": PASSWORD},
            headers=browser,
        )
        assert signed_in.status_code == 200, signed_in.text
        cookie = {"Cookie": f"__Host-session={signed_in.cookies['__Host-session']}", **browser}
        for instance in api:
            me = await instance.get("/v1/auth/me", headers=cookie)
            assert me.status_code == 200, me.text
            assert me.json()["user"]["email"] == user["email"]

        # 3. A refresh token from api-2 rotates on api-3; the new access token works on api-1.
        login = await api[1].post(
            "/v1/auth/login",
            json={"email": user["email"], "password": PASSWORD},
            headers=browser,
        )
        assert login.status_code == 200, login.text
        rotated = await api[2].post(
            "/v1/auth/token/refresh", json={"refresh_token": login.json()["refresh_token"]}
        )
        assert rotated.status_code == 200, rotated.text
        bearer = {"Authorization": f"Bearer {rotated.json()['access_token']}"}
        assert (await api[0].get("/v1/auth/me", headers=bearer)).status_code == 200
        # The old refresh token is spent everywhere: reuse on api-1 is refused.
        reused = await api[0].post(
            "/v1/auth/token/refresh", json={"refresh_token": login.json()["refresh_token"]}
        )
        assert reused.status_code == 401

        # 4. Revocation on one instance ends it on all.
        csrf = {"X-CSRF-Token": signed_in.json()["csrf_token"], "Sec-Fetch-Site": "same-origin"}
        out = await api[2].delete("/v1/auth/session", headers={**cookie, **csrf})
        assert out.status_code == 204, out.text
        for instance in api:
            assert (await instance.get("/v1/auth/me", headers=cookie)).status_code == 401

        fresh = await api[1].post(
            "/v1/auth/login",
            json={"email": user["email"], "password": PASSWORD},
            headers=browser,
        )
        refresh_token = fresh.json()["refresh_token"]
        logout = await api[0].post("/v1/auth/logout", json={"refresh_token": refresh_token})
        assert logout.status_code == 204, logout.text
        for instance in api[1:]:
            again = await instance.post(
                "/v1/auth/token/refresh", json={"refresh_token": refresh_token}
            )
            assert again.status_code == 401, again.text

        # nginx's client_header_timeout (10 s) closed every half-sent request.
        answers = await slow_closed
        assert all(b" 200 " not in answer for answer in answers)
        assert time.monotonic() - slow_started < 25
        for _, writer in slow:
            writer.close()
