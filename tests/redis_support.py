"""A real, throw-away `redis-server` for the tests that need Redis.

Started on a free port with persistence off, polled until it answers PING, terminated
afterwards. Missing binary: the test is skipped locally and fails in CI
(`SHELFWISE_TEST_REQUIRE=all`, see `tests.support.require_binary`).
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support import require_binary, wait_until

STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_redis(
    process: subprocess.Popen[bytes], client: Redis, *, what: str, timeout: float = STARTUP_TIMEOUT
) -> None:
    """Until `client` gets an answer to PING; fails at once if the server exits."""

    async def answers() -> bool:
        assert process.poll() is None, f"redis-server exited with {process.returncode}"
        try:
            return bool(await client.ping())
        except (RedisConnectionError, OSError):
            return False

    await wait_until(answers, timeout=timeout, what=what)


@asynccontextmanager
async def redis_server(workdir: Path) -> AsyncIterator[str]:
    """Yields `redis://127.0.0.1:<port>/0` of a fresh server."""
    binary = require_binary("redis-server")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        probe = Redis.from_url(url, socket_connect_timeout=1)
        try:
            await wait_for_redis(process, probe, what="redis-server PING")
        finally:
            await probe.aclose()
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
