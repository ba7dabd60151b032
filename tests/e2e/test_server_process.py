"""The real server process: `shelfwise serve`, spoken to over TCP, stopped with SIGTERM.

Everything the in-process tests cannot see: the CLI entry point, uvicorn's configuration,
the lifespan against a real socket, gzip on the wire, metrics labels, and a graceful exit.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 15.0

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_DATA_DIR": str(tmp_path),
        "SHELFWISE_LOG_JSON": "true",
        "SHELFWISE_DB_POOL_SIZE": "2",
        "SHELFWISE_DB_MAX_OVERFLOW": "2",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(SHELFWISE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,  # no stray .env is picked up
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Server(process, f"http://127.0.0.1:{port}", log_path)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=SHUTDOWN_TIMEOUT)
        if process.returncode not in (0, None):
            print(log_path.read_text(errors="replace"))


def insert_products(database_url: str, count: int) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "INSERT INTO products (sku, name, description, category, price_minor, currency) "
            "SELECT 'E2E-' || g, 'End-to-end product ' || g, repeat('A fine product. ', 8), "
            "'e2e', 100 * g, 'EUR' FROM generate_series(1, %s) AS g RETURNING id",
            (count,),
        ).fetchall()
    return [str(r[0]) for r in rows]


async def test_served_process_answers_and_shuts_down_gracefully(
    server: Server, database_url: str
) -> None:
    process, base_url = server.process, server.base_url
    product_ids = insert_products(database_url, 80)

    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:

        async def ready() -> bool:
            assert process.poll() is None, f"server exited early with {process.returncode}"
            try:
                return (await client.get("/readyz")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what="/readyz")

        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}
        readiness = (await client.get("/readyz")).json()
        assert readiness["checks"] == {"database": "ok", "migrations": "ok"}

        # X-Request-ID: a well-formed one is echoed, a missing one is generated.
        request_id = f"e2e-{uuid.uuid4().hex}"
        echoed = await client.get("/healthz", headers={"X-Request-ID": request_id})
        assert echoed.headers["x-request-id"] == request_id
        generated = (await client.get("/healthz")).headers["x-request-id"]
        assert generated
        assert generated != request_id
        missing = await client.get(
            f"/v1/products/{uuid.uuid4()}", headers={"X-Request-ID": request_id}
        )
        assert missing.status_code == 404
        assert missing.json()["request_id"] == request_id

        product = await client.get(f"/v1/products/{product_ids[0]}")
        assert product.status_code == 200
        assert product.json()["sku"] == "E2E-1"
        assert product.headers["etag"] == '"v1"'
        assert product.headers["cache-control"].startswith("public")
        revalidated = await client.get(
            f"/v1/products/{product_ids[0]}", headers={"If-None-Match": product.headers["etag"]}
        )
        assert revalidated.status_code == 304

        # A big list is gzipped on the wire when the client accepts it, plain otherwise.
        listing = await client.get(
            "/v1/products", params={"limit": 80}, headers={"Accept-Encoding": "gzip"}
        )
        assert listing.status_code == 200
        assert listing.headers["content-encoding"] == "gzip"
        assert len(listing.json()["data"]) == 80
        raw = await client.get(
            "/v1/products", params={"limit": 80}, headers={"Accept-Encoding": "identity"}
        )
        assert "content-encoding" not in raw.headers
        assert len(gzip.compress(raw.content)) < len(raw.content)

        metrics = (await client.get("/metrics")).text
        route_label = re.compile(
            r'^shelfwise_http_requests_total\{[^}]*route="/v1/products/\{product_id\}"[^}]*\} '
            r"([0-9.e+]+)$",
            re.MULTILINE,
        )
        counts = [float(value) for value in route_label.findall(metrics)]
        assert sum(counts) >= 3, metrics  # 200, 304 and 404 above, by template not raw path
        assert product_ids[0] not in metrics
        assert 'route="/healthz"' in metrics

    process.send_signal(signal.SIGTERM)

    async def exited() -> bool:
        return process.poll() is not None

    await wait_until(exited, timeout=SHUTDOWN_TIMEOUT, what="exit after SIGTERM")
    assert process.returncode == 0
    log = server.log_path.read_text(errors="replace")
    assert "Application shutdown complete" in log  # the lifespan's shutdown ran
    assert '"event": "stopped"' in log
