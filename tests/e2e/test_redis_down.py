"""Redis stops while `shelfwise serve` and `shelfwise worker` use it, then comes back.

Issue 10, test 6. The behaviour defined in `src/shelfwise/shared_state.py`:

- fails open: rate limits fall back to each process's own memory (still enforced, per
  instance); public reads, bearer-token requests and writes carry on;
- fails over: live fan-out wakes on PostgreSQL NOTIFY, so a live client still gets the
  write made while Redis is down;
- fails closed: browser sessions, kept in Redis, cannot be checked, so a cookie request
  and a session sign-in answer 503 problem+json with `Retry-After` — never a 500;
- nothing hangs (every answer within `FAST`), nothing is corrupted; the operator sees
  `/readyz` detail (still ready), `shelfwise_dependency_up{dependency="redis"} 0`, a
  `redis_unreachable` log line; and everything works again once Redis is back, with no
  process restarted.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.redis_support import free_port
from tests.support import require_binary, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
FAST = 2.0  # seconds: no answer may wait on the missing Redis longer than this
LOGIN_LIMIT = 5
STAFF = {"email": "staff@shelfwise.local", "password": "staff-demo-password"}

pytestmark = pytest.mark.e2e


class RedisProcess:
    """A redis-server on a fixed port of its own, so it can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.binary = require_binary("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        probe = Redis.from_url(self.url, socket_connect_timeout=1)
        try:

            async def answers() -> bool:
                try:
                    return bool(await probe.ping())
                except (RedisConnectionError, OSError):
                    return False

            await wait_until(answers, timeout=10, what="redis-server PING")
        finally:
            await probe.aclose()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # gone at once, connections reset: the harsh case
            self.process.wait(timeout=10)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def start(name: str, env: dict[str, str], workdir: Path, *args: str) -> subprocess.Popen[bytes]:
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [str(SHELFWISE), *args], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )


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


async def test_redis_down_fails_open_over_and_closed_and_recovers(
    database_url: str, tmp_path: Path, redis_process: RedisProcess
) -> None:
    await redis_process.start()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_process.url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_LOG_JSON": "true",
        "SHELFWISE_DATA_DIR": str(tmp_path),
        "SHELFWISE_DB_POOL_SIZE": "3",
        "SHELFWISE_DB_MAX_OVERFLOW": "2",
        "SHELFWISE_COOKIE_SECURE": "false",
        "SHELFWISE_RATE_LIMIT_LOGIN": f"{LOGIN_LIMIT}/minute",
        "SHELFWISE_LIVE_FEED_POLL_SECONDS": "5",  # a wake-up must come from NOTIFY, not the timer
        "SHELFWISE_JOBS_EXTRA_MODULES": json.dumps([]),
    }
    subprocess.run(
        [str(SHELFWISE), "seed", "--products", "2"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    api = start("api", env, tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    worker = start("worker", env, tmp_path, "worker", "--name", "redis-test")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            async def ready() -> bool:
                assert api.poll() is None, "the API process exited"
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, timeout=30, interval=0.1, what="/readyz")
            login = await client.post("/v1/auth/login", json=STAFF)
            assert login.status_code == 200, login.text
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            signed_in = await client.post("/v1/auth/session", json=STAFF)
            assert signed_in.status_code == 200, signed_in.text
            cookie = session_cookie(signed_in)
            assert (await client.get("/v1/auth/me", headers=cookie)).status_code == 200
            assert (await client.get("/readyz")).json()["checks"]["redis"] == "ok"
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

            # -- Redis goes away ----------------------------------------------------------
            redis_process.stop()

            # Fails open: public reads, bearer requests and writes carry on, with limits.
            products = await timed(client, "GET", "/v1/products", params={"limit": 2})
            assert products.status_code == 200, products.text
            assert (await timed(client, "GET", "/v1/stock", headers=bearer)).status_code == 200
            written = await timed(
                client, "POST", "/v1/stock/adjustments", json=adjustment, headers=bearer
            )
            assert written.status_code == 201, written.text

            # Fails over: the write reaches a live client through NOTIFY, well before the
            # hub's 5 s timer would have woken it.
            polled = await timed(
                client,
                "GET",
                "/v1/poll",
                params={"channels": "stock", "since": position, "timeout": 1},
                headers=bearer,
            )
            assert polled.status_code == 200, polled.text
            assert [e["type"] for e in polled.json()["events"]][:1] == ["stock.changed"]

            # Fails closed: a session that cannot be checked is not trusted.
            assert_unavailable(
                await timed(client, "GET", "/v1/auth/me", headers=cookie),
                "session_store_unavailable",
            )
            assert_unavailable(
                await timed(client, "POST", "/v1/auth/session", json=STAFF),
                "session_store_unavailable",
            )

            # Limits still hold, per instance: the login budget in this process's memory.
            statuses = [
                (
                    await timed(
                        client,
                        "POST",
                        "/v1/auth/login",
                        json={"email": STAFF["email"], "password": "wrong-password-123"},
                    )
                ).status_code
                for _ in range(LOGIN_LIMIT + 2)
            ]
            assert statuses.count(429) >= 2, statuses
            assert all(status in (401, 429) for status in statuses), statuses

            # What the operator sees.
            assert (await timed(client, "GET", "/healthz")).status_code == 200
            readiness = await timed(client, "GET", "/readyz")
            assert readiness.status_code == 200, "Redis alone does not take an instance out"
            assert readiness.json()["checks"]["redis"].startswith("degraded")
            metrics = (await timed(client, "GET", "/metrics")).text
            assert 'shelfwise_dependency_up{dependency="redis"} 0.0' in metrics
            assert (
                'shelfwise_dependency_failures_total{component="sessions",dependency="redis"}'
                in metrics
            )
            assert "redis_unreachable" in (tmp_path / "api.log").read_text()

            # -- Redis comes back (empty: it kept nothing on disk) -------------------------
            await redis_process.start()

            async def sessions_work() -> bool:
                response = await client.post("/v1/auth/session", json=STAFF)
                return response.status_code == 200

            await wait_until(sessions_work, timeout=15, what="session sign-in after Redis is back")
            again = await client.post("/v1/auth/session", json=STAFF)
            assert (
                await client.get("/v1/auth/me", headers=session_cookie(again))
            ).status_code == 200
            assert (await client.get("/readyz")).json()["checks"]["redis"] == "ok"
            assert api.poll() is None, "the API process was not restarted"
            assert worker.poll() is None, "the worker was not restarted"
    finally:
        for process in (api, worker):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for name in ("api", "worker"):
            print(
                f"--- {name}.log\n{(tmp_path / f'{name}.log').read_text(errors='replace')[-4000:]}"
            )
