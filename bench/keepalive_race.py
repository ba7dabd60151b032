"""Why `bench.rate fixed` lost adjustments with `IncompleteReadError` (issue 10).

    python -m bench.keepalive_race        # ~90 s; prints one line per client

uvicorn, as `shelfwise serve` runs it (httptools, `timeout_keep_alive=5`), answers a
request that is slow now and then (one in 150 takes 300 ms): at 20 requests/s the
client's keep-alive pool grows during each slow one, then most of its connections sit
idle for longer than 5 s and the server closes them. The client as it was took the most
recently used connection from the pool without looking: after the next slow request it
wrote to a connection the server had closed, read EOF, and the request was lost
(the server never saw it). The client now closes a pooled connection the server has
closed (`at_eof`) or that has been idle for 4 s, below the server's 5 s — the same rule
as nginx's upstream `keepalive_timeout 4s` in deploy/nginx/upstreams.conf.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import uvicorn
import uvloop

from bench.loadgen import _read_response
from bench.rate import TIMEOUT_S, fixed

SLOW_EVERY = 150


class App:
    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        if self.requests % SLOW_EVERY == 0:
            await asyncio.sleep(0.3)
        headers = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})


async def reuse_blindly(port: int, request: bytes, rate: float, duration: float) -> dict[str, int]:
    """The client before the fix: any pooled connection is reused, however old."""
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    statuses: dict[str, int] = {}

    async def one() -> None:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
                conn[1].write(request)
                status, _ = await _read_response(conn[0])
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

    started, tasks = time.perf_counter(), []
    for n in range(int(rate * duration)):
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return statuses


async def main() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = App()
    config = uvicorn.Config(
        app, port=port, loop="uvloop", http="httptools", timeout_keep_alive=5, log_level="error"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    request = f"POST /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"
    app.requests = 0
    before = await reuse_blindly(port, request.encode(), 20, 40)
    print("before (reuse any pooled connection):", json.dumps(before), flush=True)
    app.requests = 0
    after = await fixed(port, [request.encode()], 20, 40)
    keys = ("statuses", "connections_retired_idle", "failed_after_idle_s")
    print("after (bench.rate fixed):", json.dumps({k: after[k] for k in keys}), flush=True)
    server.should_exit = True
    await serving


if __name__ == "__main__":
    uvloop.run(main())
