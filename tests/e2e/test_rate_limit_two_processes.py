"""A rate limit holds across two `shelfwise serve` processes that share one Redis.

Two real server processes, one real `redis-server`; login attempts alternate between the
processes. With `SHELFWISE_RATE_LIMIT_LOGIN=6/minute` exactly six are let through in
total — not six per process — and every attempt after that is refused by either process.
Each attempt also carries a made-up `X-Forwarded-For`: no proxy is trusted, so the
header must not give a client a fresh budget (uvicorn's own proxy-header handling, which
trusts 127.0.0.1 by default, must be off).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.redis_support import free_port, redis_server
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
STARTUP_TIMEOUT = 30.0
LIMIT = 6

pytestmark = pytest.mark.e2e


def start_server(
    env: dict[str, str], workdir: Path, name: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [str(SHELFWISE), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir,  # no stray .env is picked up
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()  # the child has its own handle
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for log in sorted(tmp_path.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


async def test_login_limit_is_shared_by_two_processes_through_redis(
    database_url: str, workdir: Path
) -> None:
    async with redis_server(workdir) as redis_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SHELFWISE_ENV": "test",
            "SHELFWISE_DATA_DIR": str(workdir),
            "SHELFWISE_RATE_LIMIT_LOGIN": f"{LIMIT}/minute",
            "SHELFWISE_LOG_JSON": "true",
            "SHELFWISE_DB_POOL_SIZE": "2",
            "SHELFWISE_DB_MAX_OVERFLOW": "2",
        }
        env.pop("SHELFWISE_TRUSTED_PROXIES", None)
        env.pop("FORWARDED_ALLOW_IPS", None)
        processes: list[subprocess.Popen[bytes]] = []
        with ExitStack() as cleanup:

            def kill_all() -> None:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                    process.wait(timeout=15)

            cleanup.callback(kill_all)
            urls = []
            for name in ("a", "b"):
                process, url = start_server(env, workdir, name)
                processes.append(process)
                urls.append(url)

            async with (
                httpx.AsyncClient(base_url=urls[0], timeout=10) as first,
                httpx.AsyncClient(base_url=urls[1], timeout=10) as second,
            ):
                clients = [first, second]
                for client, process in zip(clients, processes, strict=True):

                    async def ready(
                        client: httpx.AsyncClient = client,
                        process: subprocess.Popen[bytes] = process,
                    ) -> bool:
                        assert process.poll() is None, f"server exited with {process.returncode}"
                        try:
                            return (await client.get("/readyz")).status_code == 200
                        except httpx.TransportError:
                            return False

                    await wait_until(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what="/readyz")

                results: list[tuple[int, int, str]] = []
                for attempt in range(LIMIT + 4):
                    which = attempt % 2
                    response = await clients[which].post(
                        "/v1/auth/login",
                        # Unknown emails: no per-account lockout gets in the way.
                        json={
                            "email": f"e2e-{uuid.uuid4().hex[:8]}@example.com",
                            "password": "not-a-real-password",
                        },
                        headers={"X-Forwarded-For": f"198.51.100.{attempt + 1}"},
                    )
                    results.append((which, response.status_code, response.text))

                statuses = [status for _, status, _ in results]
                assert statuses == [401] * LIMIT + [429] * 4, results
                # Both processes allowed some and both refused some: one shared budget.
                assert {which for which, status, _ in results if status == 401} == {0, 1}
                assert {which for which, status, _ in results if status == 429} == {0, 1}
                refused = await second.post(
                    "/v1/auth/login",
                    json={"email": "late@example.com", "password": "not-a-real-password"},
                )
                assert refused.status_code == 429
                assert refused.headers["ratelimit-policy"] == f'"login";q={LIMIT};w=60'
                assert 1 <= int(refused.headers["retry-after"]) <= 60
                assert refused.json()["policy"] == "login"
