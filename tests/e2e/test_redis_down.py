"""Redis stops while three instances behind nginx (and a worker) share it, then comes back.

Issue 10, test 6, through the production shape (`tests/cluster_support.py`: nginx,
pgbouncer, Redis, three `shelfwise serve`, one `shelfwise worker`). The behaviour defined in
`src/shelfwise/shared_state.py` and decision 0015:

- fails open: rate limits fall back to each instance's own memory — still enforced, but
  per instance (three instances: up to three budgets); public reads, bearer-token
  requests and writes carry on;
- fails over: live fan-out wakes on PostgreSQL NOTIFY, so a live client on one instance
  still gets a write made through another while Redis is down;
- fails closed: browser sessions, kept in Redis, cannot be checked, so a cookie request
  and a session sign-in answer 503 problem+json with `Retry-After` on every instance —
  never a 500; bearer tokens keep working on every instance;
- nothing hangs (every answer within `FAST`), nothing is corrupted; the operator sees
  `/readyz` detail (still ready: 200), `shelfwise_dependency_up{dependency="redis"} 0`, a
  `redis_unreachable` log line;
- once Redis is back, with no process restarted: sessions work on every instance — the
  one made before the kill -9 too (Redis reloads its append-only file, decision 0030) —
  and the limits are shared again (one budget across the three).

Budgets are told apart by client address: nginx appends the peer to `X-Forwarded-For`
and the instances trust nginx, so each phase counts a fresh address of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.cluster_support import Cluster, running_cluster
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
FAST = 2.0  # seconds: no answer may wait on the missing Redis longer than this
LOGIN_LIMIT = 5
STAFF = {"email": "staff@shelfwise.local", "password": "staff-demo-password"}
WRONG = {"email": STAFF["email"], "password": "wrong-password-123"}
APP_ENV = {
    "SHELFWISE_COOKIE_SECURE": "false",
    "SHELFWISE_RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute",
    "SHELFWISE_LIVE_FEED_POLL_SECONDS": "5",  # a wake-up must come from NOTIFY, not the timer
    "SHELFWISE_JOBS_EXTRA_MODULES": json.dumps([]),
}
_addresses = (f"198.51.100.{n}" for n in itertools.count(1))  # TEST-NET-2: one per budget

pytestmark = pytest.mark.e2e


def fresh_address() -> dict[str, str]:
    """Headers that make the instances count a client address no one used yet."""
    return {"X-Forwarded-For": next(_addresses)}


def session_cookie(response: httpx.Response) -> dict[str, str]:
    # Sent by hand: the cookie is Secure and __Host- prefixed, this client speaks plain HTTP.
    token = response.cookies.get("__Host-session")
    assert token, response.headers
    return {"Cookie": f"__Host-session={token}"}


async def timed(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> httpx.Response:
    started = time.monotonic()
    response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
    took = time.monotonic() - started
    assert took < FAST, f"{method} {url} took {took:.2f}s"
    return response


def assert_unavailable(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers.get("retry-after")
    assert response.json()["code"] == code


async def remaining_per_instance(cluster: Cluster) -> list[int]:
    """One anonymous read on each instance (directly) for a fresh client address: what
    each says is left of that address's budget. Shared: it goes down from one instance
    to the next. Per instance: every instance answers the same (its first hit)."""
    headers = fresh_address()
    remaining = []
    for name in cluster.apis:
        async with httpx.AsyncClient(base_url=cluster.api_url(name), timeout=10) as direct:
            response = await timed(
                direct, "GET", "/v1/products", params={"limit": 1}, headers=headers
            )
        assert response.status_code == 200, response.text
        match = re.search(r";r=(\d+)", response.headers["ratelimit"])
        assert match, response.headers["ratelimit"]
        remaining.append(int(match.group(1)))
    return remaining


async def limits_are_shared(cluster: Cluster) -> bool:
    remaining = await remaining_per_instance(cluster)
    return remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining)


async def on_each_instance(
    cluster: Cluster, method: str, url: str, **kwargs: object
) -> list[httpx.Response]:
    responses = []
    for name in cluster.apis:
        async with httpx.AsyncClient(base_url=cluster.api_url(name), timeout=10) as direct:
            responses.append(await timed(direct, method, url, **kwargs))
    return responses


async def wrong_logins(client: httpx.AsyncClient, count: int) -> list[int]:
    """`count` failed sign-ins through nginx from one fresh address; their statuses."""
    headers = fresh_address()
    return [
        (await timed(client, "POST", "/v1/auth/login", json=WRONG, headers=headers)).status_code
        for _ in range(count)
    ]


async def test_redis_down_behind_nginx_fails_open_over_and_closed_and_recovers(
    database_url: str,
) -> None:
    # Not pytest's tmp_path: other sessions on this box may clean it while we run.
    workdir = Path(tempfile.mkdtemp(prefix="shelfwise-redis-down-"))
    try:
        async with asyncio.timeout(120):  # ~25 s to start on a busy box, ~15 s of scenario
            await redis_outage(database_url, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def redis_outage(database_url: str, workdir: Path) -> None:
    began = time.monotonic()
    subprocess.run(
        [str(SHELFWISE), "seed", "--products", "2"],
        cwd=workdir,
        env={**os.environ, "DATABASE_URL": database_url, "SHELFWISE_ENV": "test"},
        check=True,
        capture_output=True,
        timeout=60,
    )
    async with (
        running_cluster(database_url, workdir, apis=3, workers=1, app_env=APP_ENV) as cluster,
        cluster.client() as client,
    ):
        print(f"cluster up after {time.monotonic() - began:.1f}s")
        pids = {name: cluster.child(name).pid for name in [*cluster.apis, *cluster.workers]}
        login = await client.post("/v1/auth/login", json=STAFF)
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        signed_in = await client.post("/v1/auth/session", json=STAFF)
        assert signed_in.status_code == 200, signed_in.text
        cookie = session_cookie(signed_in)
        # Sent by hand only: a sign-in that carries a session cookie rotates (revokes) it,
        # and this session must still be there after Redis comes back.
        client.cookies.clear()
        for response in await on_each_instance(cluster, "GET", "/v1/auth/me", headers=cookie):
            assert response.status_code == 200, response.text
        for response in await on_each_instance(cluster, "GET", "/readyz"):
            assert response.json()["checks"]["redis"] == "ok"
        await wait_until(lambda: limits_are_shared(cluster), timeout=10, what="shared limits")
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT p.id, l.id FROM products p, locations l ORDER BY p.sku, l.code LIMIT 1"
            ).fetchone()
        assert row is not None
        adjustment = {
            "product_id": str(row[0]),
            "location_id": str(row[1]),
            "kind": "receipt",
            "quantity": 3,
            "reason": "redis test",
        }
        start_at = await client.get("/v1/poll", params={"channels": "stock"}, headers=bearer)
        position = int(start_at.json()["position"])

        # -- Redis goes away (kill -9: connections reset, no shutdown save) ----------------
        print(f"Redis killed after {time.monotonic() - began:.1f}s")
        await cluster.kill("redis")

        # Fails open: public reads, bearer requests and writes carry on, with limits.
        products = await timed(client, "GET", "/v1/products", params={"limit": 2})
        assert products.status_code == 200, products.text
        for response in await on_each_instance(cluster, "GET", "/v1/stock", headers=bearer):
            assert response.status_code == 200, response.text
        written = await timed(
            client, "POST", "/v1/stock/adjustments", json=adjustment, headers=bearer
        )
        assert written.status_code == 201, written.text

        # Fails over: the write reaches a live client through NOTIFY (whichever instance
        # nginx picks for it), well before the hubs' 5 s timer would have woken them.
        polled = await timed(
            client,
            "GET",
            "/v1/poll",
            params={"channels": "stock", "since": position, "timeout": 1},
            headers=bearer,
        )
        assert polled.status_code == 200, polled.text
        assert [e["type"] for e in polled.json()["events"]][:1] == ["stock.changed"]

        # Fails closed, on every instance: a session that cannot be checked is not trusted.
        for response in await on_each_instance(cluster, "GET", "/v1/auth/me", headers=cookie):
            assert_unavailable(response, "session_store_unavailable")
        assert_unavailable(
            await timed(client, "POST", "/v1/auth/session", json=STAFF),
            "session_store_unavailable",
        )

        # Limits still hold, per instance: each counts in its own memory.
        remaining = await remaining_per_instance(cluster)
        assert len(set(remaining)) == 1, f"each instance counts alone: {remaining}"
        statuses = await wrong_logins(client, 3 * LOGIN_LIMIT + 3)
        assert all(status in (401, 429) for status in statuses), statuses
        assert statuses.count(429) >= 1, statuses  # still a limit...
        assert LOGIN_LIMIT < statuses.count(401) <= 3 * LOGIN_LIMIT, statuses  # ...per instance

        # What the operator sees, on every instance.
        for response in await on_each_instance(cluster, "GET", "/healthz"):
            assert response.status_code == 200
        for response in await on_each_instance(cluster, "GET", "/readyz"):
            assert response.status_code == 200, "Redis alone does not take an instance out"
            assert response.json()["checks"]["redis"].startswith("degraded")
        for response in await on_each_instance(cluster, "GET", "/metrics"):
            assert 'shelfwise_dependency_up{dependency="redis"} 0.0' in response.text
        assert all("redis_unreachable" in cluster.log(name) for name in cluster.apis)

        # -- Redis comes back, reloading its append-only file ------------------------------
        print(f"Redis started after {time.monotonic() - began:.1f}s")
        await cluster.start("redis")

        signed_in_again: list[httpx.Response] = []

        async def sessions_work() -> bool:
            # From fresh addresses: each try costs the sign-in budget of its address.
            response = await client.post("/v1/auth/session", json=STAFF, headers=fresh_address())
            signed_in_again.append(response)
            return response.status_code == 200

        await wait_until(sessions_work, timeout=15, what="session sign-in after Redis is back")

        async def works_everywhere(cookie: dict[str, str]) -> bool:
            # Until Redis has reloaded its append-only file and answers, an instance says
            # 503: recovery is bounded, not instantaneous.
            responses = await on_each_instance(cluster, "GET", "/v1/auth/me", headers=cookie)
            assert all(r.status_code in (200, 503) for r in responses), [r.text for r in responses]
            return all(r.status_code == 200 for r in responses)

        new_cookie = session_cookie(signed_in_again[-1])
        await wait_until(
            lambda: works_everywhere(new_cookie), timeout=10, what="new session everywhere"
        )
        # The session made before the kill -9 was in Redis's append-only file: it is back,
        # on every instance, without signing in again (decision 0030); a pooled connection
        # that died with the old server is retried on a fresh one, not answered 503
        # (shared_state.CLIENT_OPTIONS).
        assert await works_everywhere(cookie), "the earlier session was lost"
        # Each instance goes back to Redis once its 5 s skip is over: one budget again.
        await wait_until(lambda: limits_are_shared(cluster), timeout=15, what="shared limits")
        statuses = await wrong_logins(client, LOGIN_LIMIT + 2)
        assert statuses == [401] * LOGIN_LIMIT + [429] * 2, statuses

        async def redis_reported_ok() -> bool:
            readiness = await on_each_instance(cluster, "GET", "/readyz")
            return all(r.json()["checks"]["redis"] == "ok" for r in readiness)

        # Polled: one run saw one instance's first ping after the restart fail (a pooled
        # connection from before the outage), the next one answer.
        await wait_until(redis_reported_ok, timeout=10, what="/readyz redis ok on every instance")
        for name, pid in pids.items():
            assert cluster.child(name).alive, f"{name} exited"
            assert cluster.child(name).pid == pid, f"{name} was restarted"
        print(f"scenario done after {time.monotonic() - began:.1f}s")
    print(f"cluster stopped after {time.monotonic() - began:.1f}s")
