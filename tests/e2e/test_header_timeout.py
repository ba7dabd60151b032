"""The real `shelfwise serve` against slowloris and bytes its HTTP parser refuses.

1,000 connections that start a request and never finish its headers are each answered
408 and closed by the header deadline, while a normal request is still served; the
parser's refusals (invalid request line, NUL in a header, oversized headers) are
problem+json, not plain text.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
HEADER_TIMEOUT = 1.0
SLOW_CLIENTS = 1_000

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_DATA_DIR": str(tmp_path),
        "SHELFWISE_DB_POOL_SIZE": "2",
        "SHELFWISE_DB_MAX_OVERFLOW": "2",
        "SHELFWISE_SERVER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "SHELFWISE_SERVER_MAX_HEADER_BYTES": "4096",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(SHELFWISE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(timeout=15)


async def started(address: str) -> None:
    async def healthy() -> bool:
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"http://{address}/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(healthy, timeout=30, what="the server to start")


async def exchange(address: str, raw: bytes) -> bytes:
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(raw)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
    writer.close()
    return answer


def problem_of(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower(), head
    return status, json.loads(body)


async def test_slow_headers_are_408_and_closed_while_others_are_served(server: str) -> None:
    await started(server)
    host, port = server.split(":")
    slow = [await asyncio.open_connection(host, int(port)) for _ in range(SLOW_CLIENTS)]
    for _, writer in slow:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")  # never ends
    async with httpx.AsyncClient() as client:  # the server is not held by them
        assert (await client.get(f"http://{server}/healthz")).status_code == 200
    answers = await asyncio.wait_for(
        asyncio.gather(*(reader.read() for reader, _ in slow)), timeout=30
    )
    for _, writer in slow:
        writer.close()
    assert len(answers) == SLOW_CLIENTS
    statuses = {problem_of(answer)[0] for answer in answers}
    assert statuses == {408}
    assert problem_of(answers[0])[1]["code"] == "header_timeout"


REFUSED = [
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed_request"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", 400, "malformed_request"),
    (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
]


async def test_parser_refusals_are_problems(server: str) -> None:
    await started(server)
    for raw, status, code in REFUSED:
        answer_status, body = problem_of(await exchange(server, raw))
        assert (answer_status, body["code"]) == (status, code), raw[:40]
