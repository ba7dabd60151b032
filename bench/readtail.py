"""The read tail of cached `GET /v1/products/{id}`: when the slow reads happen, and why.

    python -m bench.readtail [--duration 45] [--connections 64] [--variant expire]

Three variants, one after the other in the same run (`--variant` picks): `expire-30s`,
the cache as it was (a 30 s TTL; every entry dies exactly 30 s after its load),
`refresh-30s` (the same TTL, refreshed ahead) and `default` (300 s, refreshed ahead).
Each: one `shelfwise serve` on the bench database (10,000 products, as `bench.run`).
Every id is read once first, so the product cache holds all of them; then a closed loop
of N keep-alive connections reads random ids for `--duration` seconds (longer than the
cache's 30 s TTL, so what happens when the warmed entries expire is inside the run). The
client (its own process, uvloop, raw sockets) records every request's start time and
latency; the harness scrapes the server's /metrics every second: product cache hits,
misses and background refreshes, GC passes per generation. The report puts them side by
side per second, and counts the reads slower than 10 x p50.

Rate limiting is off (one client IP would be answered 429 within a second).
Results: bench/results/<stamp>-readtail.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from bench.loadgen import _read_response, percentile
from bench.run import machine_busy_seconds
from bench.servers import BIN, ROOT, free_port, prepare_database, shelfwise_server

RESULTS = ROOT / "bench" / "results"
CACHE = r'^shelfwise_cache_requests_total\{[^}]*cache="product"[^}]*result="%s"'
METRICS = {
    "cache_hit": re.compile(CACHE % "hit"),
    "cache_miss": re.compile(CACHE % "miss"),
    "cache_refresh": re.compile(CACHE % "refresh"),
    "gc0": re.compile(r'^python_gc_collections_total\{generation="0"\}'),
    "gc1": re.compile(r'^python_gc_collections_total\{generation="1"\}'),
    "gc2": re.compile(r'^python_gc_collections_total\{generation="2"\}'),
    # The loop ran a due timer late: over 100 ms (the lag histogram's buckets), or a
    # stall LoopWatch logged as event_loop_blocked.
    "lag_samples": re.compile(r"^shelfwise_event_loop_lag_seconds_count "),
    "lag_le_100ms": re.compile(r'^shelfwise_event_loop_lag_seconds_bucket\{le="0\.1"\}'),
    "loop_blocked": re.compile(r"^shelfwise_event_loop_blocked_total "),
}


def involuntary_switches(pid: int) -> float:
    """Times the kernel took the core from the server's process tree (a busy machine)."""
    import psutil

    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.num_ctx_switches().involuntary
    return float(total)


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = dict.fromkeys(METRICS, 0.0)
    for line in text.splitlines():
        for name, pattern in METRICS.items():
            if pattern.match(line):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


# -- the client (a subprocess) ------------------------------------------------------------


async def client(port: int, ids: list[str], connections: int, duration: float) -> list[list[float]]:
    heads = [f"GET /v1/products/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for i in ids]
    samples: list[list[float]] = []  # [start offset s, latency s, status, first on its connection]
    t0 = time.perf_counter()
    deadline = t0 + duration

    async def loop(seed: int) -> None:
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = 1
        while (start := time.perf_counter()) < deadline:
            writer.write(rng.choice(heads))
            status, close = await _read_response(reader)
            samples.append([start - t0, time.perf_counter() - start, status, first])
            first = 0
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                first = 1
        writer.close()

    await asyncio.gather(*(loop(n) for n in range(connections)))
    return samples


async def warm(port: int, ids: list[str]) -> None:
    """Read every id once over 8 connections: afterwards each is in the cache."""
    queue = list(ids)

    async def loop() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            writer.write(f"GET /v1/products/{queue.pop()} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await _read_response(reader)
        writer.close()

    await asyncio.gather(*(loop() for _ in range(8)))


def client_main(argv: list[str]) -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids", required=True)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--warm-only", action="store_true")
    args = parser.parse_args(argv)
    with open(args.ids) as fh:
        ids = json.load(fh)
    if args.warm_only:
        uvloop.run(warm(args.port, ids))
        return
    print(json.dumps(uvloop.run(client(args.port, ids, args.connections, args.duration))))


# -- the harness ---------------------------------------------------------------------------


def per_second(samples: list[list[float]], p50: float) -> list[dict[str, Any]]:
    buckets: dict[int, list[float]] = defaultdict(list)
    for start, latency, *_ in samples:
        buckets[int(start)].append(latency)
    rows = []
    for second in sorted(buckets):
        lat = sorted(buckets[second])
        rows.append(
            {
                "s": second,
                "n": len(lat),
                "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
                "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
                "max_ms": round(lat[-1] * 1000, 1),
                "slow": sum(1 for x in lat if x > 10 * p50),
            }
        )
    return rows


TTL_30 = {"SHELFWISE_CATALOG_PRODUCT_TTL_SECONDS": "30"}
VARIANTS = {
    # The cache as it was: a 30 s TTL, every entry expiring exactly 30 s after its load.
    "expire-30s": {**TTL_30, "SHELFWISE_CATALOG_CACHE_REFRESH_AHEAD": "false"},
    # The same 30 s, refreshed ahead (bounded, jittered): the mechanism alone.
    "refresh-30s": {**TTL_30, "SHELFWISE_CATALOG_CACHE_REFRESH_AHEAD": "true"},
    # As shipped: 300 s (decision 0012's safety net) and refresh ahead.
    "default": {},
}


def measure(
    variant: str, url: str, ids: list[str], args: argparse.Namespace, stamp: str
) -> dict[str, Any]:
    # Every request comes from 127.0.0.1: the per-IP limit would answer 429 (as bench.issues).
    env = {"SHELFWISE_RATE_LIMIT_ENABLED": "false", **VARIANTS[variant]}
    env.update(item.split("=", 1) for item in args.server_env)
    log = RESULTS / f"{stamp}-readtail-{variant}.log"
    server = shelfwise_server(url, free_port(), log, log_json=True, extra_env=env)
    ids_file = RESULTS / f"{stamp}-readtail-ids.json"
    ids_file.write_text(json.dumps(ids))
    python = str(BIN / "python")
    scrapes: list[tuple[float, dict[str, float]]] = []
    try:
        server.start()
        server.wait_ready()
        base = [python, "-m", "bench.readtail", "client", "--port", str(server.port)]
        base += ["--ids", str(ids_file)]
        warm_started = time.perf_counter()
        subprocess.run([*base, "--warm-only"], cwd=ROOT, check=True, timeout=300)
        stop = threading.Event()

        def sample(t0: float) -> None:
            assert server.process is not None
            while not stop.is_set():
                sample = scrape(server.port)
                sample["preempted"] = involuntary_switches(server.process.pid)
                scrapes.append((time.perf_counter() - t0, sample))
                stop.wait(1.0)

        t0 = time.perf_counter()
        warm_s = t0 - warm_started
        sampler = threading.Thread(target=sample, args=(t0,), daemon=True)
        sampler.start()
        cpu, busy = server.cpu_seconds(), machine_busy_seconds()
        argv = [*base, "--connections", str(args.connections), "--duration", str(args.duration)]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True)
        cpu, busy = server.cpu_seconds() - cpu, machine_busy_seconds() - busy
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join(5)
    finally:
        server.stop()
        ids_file.unlink(missing_ok=True)
    samples = json.loads(done.stdout)
    lat = sorted(s[1] for s in samples)
    p50 = percentile(lat, 0.5)
    seconds = per_second(samples, p50)
    # Counter deltas per scrape interval, keyed by the second the interval ends in.
    deltas = [
        {"s": round(t2, 1), **{k: b[k] - a[k] for k in [*METRICS, "preempted"]}}
        for (_, a), (t2, b) in itertools.pairwise(scrapes)
    ]
    for d in deltas:  # loop timers run more than 100 ms late in that interval
        d["lag_over_100ms"] = d.pop("lag_samples") - d.pop("lag_le_100ms")
    summary = {
        "variant": variant,
        "server_env": env,
        "warm_up_s": round(warm_s, 1),
        "requests": len(samples),
        "rps": round(len(samples) / args.duration, 1),
        "non_200": sum(1 for s in samples if s[2] != 200),
        "p50_ms": round(p50 * 1000, 2),
        "p90_ms": round(percentile(lat, 0.9) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2),
        "slow_over_10x_p50": sum(r["slow"] for r in seconds),
        # The first request of each connection (64 opened at once when the load starts).
        "slow_first_on_connection": sum(1 for s in samples if s[3] and s[1] > 10 * p50),
        "server_cpu_us_per_req": round(cpu / max(1, len(samples)) * 1e6),
        "server_cpu_pct": round(100 * cpu / wall),
        "rest_cpu_pct": round(100 * (busy - cpu) / wall),  # client, database, other work
        "cache_misses": sum(d["cache_miss"] for d in deltas),
        "cache_refreshes": sum(d["cache_refresh"] for d in deltas),
        "gc2_passes": sum(d["gc2"] for d in deltas),
        "loop_lag_over_100ms": sum(d["lag_over_100ms"] for d in deltas),
        "loop_blocked": sum(d["loop_blocked"] for d in deltas),
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(summary))
    print(f"{'s':>4} {'n':>6} {'p50':>7} {'p99':>7} {'max':>7} {'slow':>5}")
    for row in seconds:
        print(
            f"{row['s']:>4} {row['n']:>6} {row['p50_ms']:>7} {row['p99_ms']:>7}"
            f" {row['max_ms']:>7} {row['slow']:>5}"
        )
    print(
        "metrics per scrape interval (end s: cache hit/miss/refresh, gc0/1/2, loop timers"
        " > 100 ms late, loop stalls logged, involuntary context switches of the server):"
    )
    for d in deltas:
        print(
            f"  {d['s']:>5}: hit {d['cache_hit']:>6.0f} miss {d['cache_miss']:>5.0f}"
            f" refresh {d['cache_refresh']:>5.0f}  gc {d['gc0']:.0f}/{d['gc1']:.0f}/{d['gc2']:.0f}"
            f"  lag>100ms {d['lag_over_100ms']:.0f} blocked {d['loop_blocked']:.0f}"
            f"  preempted {d['preempted']:.0f}"
        )
    return {**summary, "per_second": seconds, "metrics": deltas}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=45.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--variant", action="append", choices=tuple(VARIANTS))
    parser.add_argument("--server-env", action="append", default=[], help="NAME=VALUE")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    url, ids = prepare_database(10_000)
    runs = [measure(v, url, ids, args, stamp) for v in args.variant or list(VARIANTS)]
    out = RESULTS / f"{stamp}-readtail.json"
    out.write_text(json.dumps({"stamp": stamp, "runs": runs}, indent=1))
    print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
