"""What each middleware layer costs per request, in-process, on a trivial endpoint.

    python -m bench.middleware_layers [--requests 20000] [--rounds 3]

Calls each layer (alone, around an app that answers a 40-byte JSON body) and a few
stacks directly as ASGI apps, no socket, no server, and reports the best round's CPU
per request minus the bare app's. Runs in ~20-40 s. Access log lines go to a discarded
logger (the layer still formats the call; the JSON rendering is not measured).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Callable

import structlog
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from shelfwise.http.compression import CompressionMiddleware
from shelfwise.http.edge import EdgeMiddleware
from shelfwise.http.limits import BodySizeLimitMiddleware
from shelfwise.http.ratelimit import Policy, RateLimiter, RateLimitMiddleware
from shelfwise.http.timeouts import RequestTimeoutMiddleware
from shelfwise.live.streaming import StreamSendMiddleware

BODY = b'{"id":"3f0c","status":"reserved","n":1}'


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"40")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


def scope() -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/orders",
        "raw_path": b"/v1/orders",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", b"40"),
            (b"authorization", b"Bearer x"),
            (b"idempotency-key", b"k-1"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def receive() -> Message:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: Message) -> None:
    return None


def layers() -> dict[str, Callable[[ASGIApp], ASGIApp]]:
    limiter = RateLimiter(None)
    return {
        "stream send": StreamSendMiddleware,
        # Installed only with trusted proxies; the peer here is one.
        "proxy headers": lambda app: ProxyHeadersMiddleware(app, trusted_hosts=["127.0.0.1"]),
        "request timeout": lambda app: RequestTimeoutMiddleware(app, seconds=30),
        # Installed only when rate limits are on; an authenticated request (the bench's
        # bearer header) costs the concurrency cap and the headers, no limiter hit.
        "rate limit (on)": lambda app: RateLimitMiddleware(
            app,
            limiter=limiter,
            anonymous=Policy.parse("anonymous", "100000/minute"),
            max_concurrent=100,
        ),
        "gzip (starlette's)": lambda app: GZipMiddleware(app, minimum_size=1024),
        "compression": lambda app: CompressionMiddleware(app, minimum_size=1024),
        "body size": lambda app: BodySizeLimitMiddleware(app, max_bytes=1 << 20),
        EDGE: lambda app: EdgeMiddleware(app, access_log=True),
    }


EDGE = "edge"


def stacked(names: list[str], table: dict[str, Callable[[ASGIApp], ASGIApp]]) -> ASGIApp:
    app: ASGIApp = endpoint
    for name in reversed(names):
        app = table[name](app)
    return app


async def cpu_per_request(app: ASGIApp, requests: int) -> float:
    started = time.process_time()
    for _ in range(requests):
        await app(scope(), receive, send)
    return (time.process_time() - started) / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    table = layers()
    variants: dict[str, ASGIApp] = {"bare": endpoint}
    variants |= {name: make(endpoint) for name, make in table.items() if name != EDGE}
    # The five layers it folded (request id, access log, metrics, error boundary,
    # security headers) are gone from src/; this module as of f11113c measured them
    # side by side with the fold (docs/performance.md).
    variants[EDGE] = stacked([EDGE], table)
    best: dict[str, float] = {}
    for _ in range(rounds):  # interleaved, so a burst of load hits every variant alike
        for name, app in variants.items():
            await cpu_per_request(app, requests // 10)  # warm caches and metric children
            cost = await cpu_per_request(app, requests)
            best[name] = min(best.get(name, cost), cost)
    bare = best["bare"]
    print(f"load average {os.getloadavg()}; best of {rounds} rounds of {requests} requests")
    print(f"{'layer':32} {'us/request':>10} {'minus bare':>10}")
    for name, cost in best.items():
        print(f"{name:32} {cost:10.1f} {cost - bare:10.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    structlog.configure(
        processors=[structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    asyncio.run(main(args.requests, args.rounds))
