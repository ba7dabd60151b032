"""nginx retries on another instance only what is safe to repeat (issue 10: "never a POST
without Idempotency-Key"; decision 0017), with the configuration `shelfwise cluster`
renders from deploy/nginx/.

Two fake instances stand behind a real nginx. Each takes the request and, on its first
attempt, drops the connection without an answer — what an instance killed mid-request
does. A GET and a keyed POST are sent to the other instance and succeed; a POST or PATCH
without a key, and an upload, reach one instance only and the client gets the error; a
503 (every instance in a database outage) is passed on, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shelfwise.cluster.nginx import EdgeLimits, nginx_argv, render_nginx
from shelfwise.cluster.tls import ensure_self_signed
from shelfwise.cluster.topology import free_port
from tests.support import require_binary, wait_until

pytestmark = pytest.mark.e2e

DROP = b""  # close the connection without an answer
# Each answer closes its connection (and says so), so nginx never reuses one the fake
# instance has closed: every failure nginx sees is the one a case sets up.
OK = (
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nConnection: close\r\n"
    b"Content-Type: application/problem+json\r\nContent-Length: 2\r\n\r\n{}"
)


@dataclass
class Instances:
    """Fake API instances sharing one log of the requests they were sent."""

    answer: Callable[[int], bytes]  # attempt number (1, 2, …) -> raw response or DROP
    seen: list[tuple[int, str]] = field(default_factory=list)  # (port, request line)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            self.seen.append((port, head.split(b"\r\n", 1)[0].decode()))
            response = self.answer(len(self.seen))
            if response:
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def nginx_in_front(
    instances: Instances, limits: EdgeLimits | None = None
) -> AsyncIterator[tuple[str, str]]:
    """A real nginx on the cluster's rendered configuration, two fake instances behind it;
    its plain-HTTP and TLS base URLs."""
    nginx = require_binary("nginx")
    openssl = require_binary("openssl")
    directory = Path(tempfile.mkdtemp(prefix="shelfwise-nginx-retries-"))
    servers = [
        await asyncio.start_server(instances.handle, "127.0.0.1", free_port()) for _ in range(2)
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    http_port, https_port = free_port(), free_port()
    conf = render_nginx(
        directory / "nginx",
        http_port=http_port,
        https_port=https_port,
        api_ports=ports,
        live_ports=ports,
        tls=ensure_self_signed(directory / "tls", openssl),
        limits=limits or EdgeLimits(rate="1000r/s", burst=1000, connections=1000),
    )
    process = subprocess.Popen(
        nginx_argv(nginx, conf), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        async def listening() -> bool:
            assert process.poll() is None, (directory / "nginx/logs/error.log").read_text()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", http_port)
            except OSError:
                return False
            writer.close()
            return True

        await wait_until(listening, timeout=10, what="nginx listening")
        yield f"http://127.0.0.1:{http_port}", f"https://127.0.0.1:{https_port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        for server in servers:
            server.close()
        shutil.rmtree(directory, ignore_errors=True)


def drop_first(attempt: int) -> bytes:
    return DROP if attempt == 1 else OK


KEY = {"Idempotency-Key": "retry-test-1"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "attempts"),
    [
        ("GET", "/v1/products", {}, 200, 2),
        ("POST", "/v1/orders", KEY, 200, 2),
        ("PATCH", "/v1/products/p1", KEY, 200, 2),
        ("POST", "/v1/orders", {}, 502, 1),
        ("PATCH", "/v1/products/p1", {}, 502, 1),
        ("POST", "/v1/imports", KEY, 502, 1),  # an upload's body is streamed, not kept
    ],
    ids=["get", "keyed-post", "keyed-patch", "unkeyed-post", "unkeyed-patch", "upload"],
)
async def test_a_dropped_request_is_retried_elsewhere_only_when_safe(
    method: str, path: str, headers: dict[str, str], status: int, attempts: int
) -> None:
    instances = Instances(drop_first)
    async with nginx_in_front(instances) as (url, _), httpx.AsyncClient(timeout=10) as client:
        response = await client.request(method, url + path, headers=headers, json={"a": 1})
    assert response.status_code == status, response.text
    assert [line for _, line in instances.seen] == [f"{method} {path} HTTP/1.1"] * attempts
    if attempts == 2:  # the retry went to the other instance
        assert instances.seen[0][0] != instances.seen[1][0]
    else:  # nginx's own answer, in the app's language
        assert_problem(response, 502, "bad_gateway")
        assert response.headers["retry-after"] == "1"
        assert "strict-transport-security" not in response.headers  # plain HTTP


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["type"] == f"urn:shelfwise:problem:{code}"
    assert len(body["request_id"]) == 32  # nginx's $request_id, also sent to the instance


async def test_a_503_is_passed_on_not_retried() -> None:
    """Every instance answers 503 + Retry-After in a database outage: nginx must neither
    retry it nor count it as a failed instance (which would end in 502s for everyone)."""
    instances = Instances(lambda attempt: BUSY)
    async with nginx_in_front(instances) as (url, _), httpx.AsyncClient(timeout=10) as client:
        for _ in range(4):
            response = await client.get(url + "/v1/products")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "2"
            assert response.content == b"{}"  # the instance's own body, not replaced
    assert len(instances.seen) == 4  # one attempt each, none refused as "no live upstreams"


async def test_edge_limits_answer_problem_json_before_any_instance() -> None:
    """nginx's first rate limit (limit_req, per address) and body limit refuse at the edge,
    as problem+json like the app's own 429 and 413; the instances never see those."""
    instances = Instances(lambda attempt: OK)
    limits = EdgeLimits(rate="1r/m", burst=2, connections=1000)
    async with (
        nginx_in_front(instances, limits) as (url, _),
        httpx.AsyncClient(timeout=10) as client,
    ):
        statuses = [(await client.get(url + "/v1/products")).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]  # one + a burst of two
        refused = await client.get(url + "/v1/products")
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "1"
        assert len(instances.seen) == 3

    instances = Instances(lambda attempt: OK)
    async with nginx_in_front(instances) as (url, _), httpx.AsyncClient(timeout=10) as client:
        too_large = await client.post(
            url + "/v1/orders", content=b"x" * (1024 * 1024 + 1), headers=KEY
        )
        assert_problem(too_large, 413, "payload_too_large")
        assert instances.seen == []


async def test_edge_problems_over_tls_keep_hsts() -> None:
    instances = Instances(drop_first)
    async with (
        nginx_in_front(instances) as (_, tls_url),
        httpx.AsyncClient(timeout=10, verify=False) as client,  # self-signed
    ):
        response = await client.post(tls_url + "/v1/orders", json={"a": 1})
    assert_problem(response, 502, "bad_gateway")
    assert response.headers["strict-transport-security"].startswith("max-age=")
