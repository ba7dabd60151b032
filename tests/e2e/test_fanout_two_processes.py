"""A change written through one server process reaches a live subscriber on another.

Real processes: two `shelfwise serve` and one `shelfwise worker` (which runs the relay).
With Postgres only, the hubs wake on NOTIFY; with `REDIS_URL`, the relay announces on
Redis pub/sub and the hubs listen there. Either way the subscriber on process B sees the
adjustment made through process A, with its stream position.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelfwise.context import AppContext
from shelfwise.identity.models import Role
from tests.live_support import sse_events, take
from tests.redis_support import free_port, redis_server
from tests.support import make_user, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"

pytestmark = pytest.mark.e2e


def start(env: dict[str, str], workdir: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [str(SHELFWISE), *args], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return process


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    for log in sorted(tmp_path.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


@asynccontextmanager
async def no_redis(workdir: Path) -> AsyncIterator[str | None]:
    yield None


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_write_on_one_process_reaches_a_subscriber_on_another(
    backend: str, database_url: str, workdir: Path, ctx: AppContext
) -> None:
    staff = await make_user(ctx, Role.STAFF)
    # The servers run on the wall clock, not the test's fixed one; same signing key.
    token, _ = ctx.tokens.issue(user_id=staff["id"], role="staff", now=datetime.now(UTC))
    staff["headers"] = {"Authorization": f"Bearer {token}"}
    wake = redis_server(workdir) if backend == "redis" else no_redis(workdir)
    async with wake as redis_url:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SHELFWISE_ENV": "test",
            "SHELFWISE_DATA_DIR": str(workdir),
            "SHELFWISE_DB_POOL_SIZE": "3",
            "SHELFWISE_LOG_JSON": "true",
            "SHELFWISE_RELAY_POLL_SECONDS": "5",
            "SHELFWISE_LIVE_FEED_POLL_SECONDS": "30",
        }  # prove the wake-ups, not polling
        if redis_url:
            env["REDIS_URL"] = redis_url
        ports = [free_port(), free_port()]
        with ExitStack() as cleanup:
            processes = [
                start(env, workdir, name, "serve", "--host", "127.0.0.1", "--port", str(port))
                for name, port in zip(("a", "b"), ports, strict=True)
            ]
            processes.append(start(env, workdir, "worker", "worker"))

            def stop_all() -> None:
                for process in processes:
                    if process.poll() is None:
                        process.kill()
                    process.wait(timeout=15)

            cleanup.callback(stop_all)
            clients = [
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", timeout=15, headers=staff["headers"]
                )
                for port in ports
            ]
            a, b = clients
            try:
                for client in clients:
                    await wait_until(lambda c=client: _ready(c), timeout=30, what="/readyz")
                product, location = await _stocked(a)
                async with b.stream("GET", f"/v1/stream?channels=stock:{product}") as stream:
                    assert stream.status_code == 200
                    events = sse_events(stream)
                    adjusted = await a.post(
                        "/v1/stock/adjustments",
                        json={
                            "product_id": product,
                            "location_id": location,
                            "kind": "receipt",
                            "quantity": 3,
                            "reason": "fan-out test",
                        },
                    )
                    assert adjusted.status_code == 201, adjusted.text
                    # The setup receipt (on_hand 5) may arrive first if it was published
                    # after we subscribed; the adjustment through A must follow it.
                    seen = [
                        e.data["data"]["on_hand"]
                        for e in await take(events, 1, kind="stock.changed", timeout=20)
                    ]
                    if seen[-1] != 8:
                        seen += [
                            e.data["data"]["on_hand"]
                            for e in await take(events, 1, kind="stock.changed", timeout=20)
                        ]
                assert seen[-1] == 8, seen
            finally:
                for client in clients:
                    await client.aclose()


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _stocked(client: httpx.AsyncClient) -> tuple[str, str]:
    product = await client.post(
        "/v1/products",
        json={
            "sku": f"FAN-{free_port()}",
            "name": "Fan-out mug",
            "price_minor": 500,
            "currency": "EUR",
        },
    )
    assert product.status_code == 201, product.text
    location = await client.post(
        "/v1/locations", json={"code": f"F{free_port()}", "name": "Fan-out"}
    )
    assert location.status_code == 201, location.text
    ids: list[Any] = [product.json()["id"], location.json()["id"]]
    received = await client.post(
        "/v1/stock/adjustments",
        json={
            "product_id": ids[0],
            "location_id": ids[1],
            "kind": "receipt",
            "quantity": 5,
            "reason": "setup",
        },
    )
    assert received.status_code == 201, json.dumps(received.json())
    return ids[0], ids[1]
