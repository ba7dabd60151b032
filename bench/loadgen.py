"""Built-in load generator, used when `wrk` is not installed.

Closed loop: each of N keep-alive connections sends a GET, waits for the whole response,
records the latency and sends the next, until the duration is up. It speaks just enough
HTTP/1.1 over raw asyncio streams (status line, Content-Length or chunked bodies) — an
HTTP client library would spend more CPU per request than the servers under test, on a
machine where the generator and the servers share two cores.

Run it in its own process (`bench.run` does), so its event loop never competes with the
harness's sampling threads:

    python -m bench.loadgen --port 8000 --paths paths.txt --connections 64 --duration 15

It prints one JSON `LoadResult` on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field

REQUEST_TIMEOUT_S = 5.0
MAX_CLIENTS = 65_536


def client_address(n: int) -> str:
    """The n-th simulated client, in 198.18.0.0/15 (RFC 2544's benchmarking range)."""
    return f"198.18.{n // 256 % 256}.{n % 256}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one load run measured; wrk's output is converted to the same shape."""

    tool: str
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # transport errors, timeouts and non-2xx/3xx responses
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(math.ceil(fraction * len(sorted_values)) - 1, 0)
    return sorted_values[min(rank, len(sorted_values) - 1)]


@dataclass(slots=True)
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return (status, server wants the connection closed)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, close


def _requests(host: str, port: int, paths: list[str], clients: int) -> list[bytes]:
    """Every request line to pick from: each path, from each simulated client when some are
    asked for (then `X-Forwarded-For` names it, as the trusted proxy would)."""
    heads = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n" for p in paths]
    if not clients:
        return [(h + "\r\n").encode() for h in heads]
    rng = random.Random(0)
    count = min(max(len(heads), clients), 100_000)  # a bounded sample of combinations
    pick = [(rng.choice(heads), client_address(rng.randrange(clients))) for _ in range(count)]
    return [f"{head}X-Forwarded-For: {ip}\r\n\r\n".encode() for head, ip in pick]


async def _connection(
    host: str, port: int, requests: list[bytes], deadline: float, tally: _Tally, seed: int
) -> None:
    rng = random.Random(seed)
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while time.perf_counter() < deadline:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                started = time.perf_counter()
                writer.write(rng.choice(requests))
                status, close = await _read_response(reader)
            tally.latencies.append(time.perf_counter() - started)
            if status >= 400:
                tally.error(f"status_{status}")
        except TimeoutError:
            tally.error("timeout")
            close = True
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.error("transport")
            close = True
        if close and writer is not None:
            writer.close()
            writer, reader = None, None
    if writer is not None:
        writer.close()


async def generate(
    host: str,
    port: int,
    paths: list[str],
    *,
    connections: int,
    duration_s: float,
    clients: int = 0,
) -> LoadResult:
    requests = _requests(host, port, paths, clients)
    tally = _Tally()
    started = time.perf_counter()
    deadline = started + duration_s
    workers = [
        _connection(host, port, requests, deadline, tally, seed) for seed in range(connections)
    ]
    # Every request is bounded by REQUEST_TIMEOUT_S, so this bound is never the normal exit.
    await asyncio.wait_for(asyncio.gather(*workers), duration_s + 2 * REQUEST_TIMEOUT_S)
    elapsed = time.perf_counter() - started
    ordered = sorted(tally.latencies)
    return LoadResult(
        tool="bench.loadgen",
        requests=len(ordered),
        duration_s=round(elapsed, 3),
        p50_ms=round(percentile(ordered, 0.50) * 1000, 2),
        p90_ms=round(percentile(ordered, 0.90) * 1000, 2),
        p99_ms=round(percentile(ordered, 0.99) * 1000, 2),
        max_ms=round((ordered[-1] if ordered else 0.0) * 1000, 2),
        errors=sum(tally.errors.values()),
        error_kinds=tally.errors,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Closed-loop HTTP/1.1 GET load generator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths", required=True, help="file with one request path per line")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=0, help="simulated X-Forwarded-For peers")
    args = parser.parse_args()
    with open(args.paths, encoding="utf-8") as fh:
        paths = [line.strip() for line in fh if line.strip()]
    try:
        import uvloop
    except ImportError:  # the generator still works, only slower
        runner = asyncio.run
    else:
        runner = uvloop.run
    result = runner(
        generate(
            args.host,
            args.port,
            paths,
            connections=args.connections,
            duration_s=args.duration,
            clients=min(args.clients, MAX_CLIENTS),
        )
    )
    print(json.dumps(result.to_json()))


if __name__ == "__main__":
    main()
