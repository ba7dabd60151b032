"""Throughput through nginx with 1, 2 and 3 API instances, beside the raw baseline.

    python -m bench.cluster [--apis 1 --apis 2 --apis 3] [--duration 10] [--connections 64]
                            [--database shelfwise_bench_cluster]

With the defaults it runs 3 to 5 minutes (four targets, two workloads each, 2 s warm-up + 10 s,
plus starting each cluster: ~20 s quiet, up to a minute on a busy box); the total is
printed and stored as `elapsed_s`.

For each size the cluster's own specs (`shelfwise.cluster.topology`: pgbouncer, Redis, N
`serve --role api`, one worker for the relay, nginx) run on a database of their own in the
bench cluster (`var/bench`; other benchmarks' orders would leave the worker a backlog to
publish and reservations to expire while this one measures), and each step starts once the
worker has published every event (the previous step's orders); product reads (`GET
/v1/products/{id}`, random of the seeded products) and keyed orders (`POST /v1/orders`, one
unit of a random product) are driven closed-loop over keep-alive connections through nginx's
plain-HTTP port. The raw baseline (`bench/baseline.py`, no nginx) is measured in the same
run. Each step records where the CPU went, to say where the ceiling is: `parts_cpu_pct` per
part of the cluster (`api` instances together, `nginx` master + workers, `pgbouncer`,
`redis`, `worker`, and `loadgen`, this process), `db_cpu_pct` for PostgreSQL, `rest_cpu_pct`
for everything else on the machine (the parts included); 100 = one core. Results go to
`bench/results/<stamp>-cluster.json`. The load generator runs in this process (uvloop, raw
sockets: less CPU per request than any of the servers under test).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.issues import CUSTOMER, RESULTS, Load, login, relayed
from bench.loadgen import _read_response, percentile
from bench.servers import ROOT, Server, baseline_server, free_port, prepare_seeded
from shelfwise.cluster.binaries import require
from shelfwise.cluster.nginx import EdgeLimits
from shelfwise.cluster.supervisor import Supervisor
from shelfwise.cluster.topology import TopologyOptions, build_topology, required_binaries

APP_ENV = {
    "SHELFWISE_ENV": "development",
    "SHELFWISE_RATE_LIMIT_ENABLED": "false",
    "SHELFWISE_ACCESS_LOG": "false",
}


def request_bytes(method: str, path: str, port: int, headers: dict[str, str], body: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def closed_loop(port: int, make: Any, connections: int, duration: float) -> dict[str, Any]:
    """`connections` keep-alive connections, each sending `make()` and waiting for the
    answer until `duration` is up."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + duration

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.monotonic() < deadline:
                start = time.monotonic()
                writer.write(make())
                try:
                    status, keep = await asyncio.wait_for(_read_response(reader), 5.0)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                    return
                latencies.append(time.monotonic() - start)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if not keep:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)), return_exceptions=True)
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    ok = sum(n for s, n in statuses.items() if s in ("200", "201"))
    return {
        "ok_per_s": round(ok / elapsed, 1),
        "p50_ms": round(percentile(ordered, 0.5) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
        "statuses": statuses,
    }


def workloads(port: int, ids: list[str], location: str, token: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    counter = iter(range(10**9))

    def read() -> bytes:
        return request_bytes("GET", f"/v1/products/{random.choice(ids)}", port, {}, "")

    def order() -> bytes:
        body = json.dumps(
            {"lines": [{"product_id": random.choice(ids), "quantity": 1}], "location_id": location}
        )
        key = {"Idempotency-Key": f"cluster-bench-{os.getpid()}-{next(counter)}-{time.time_ns()}"}
        return request_bytes("POST", "/v1/orders", port, {**auth, **key}, body)

    return {"reads": read, "orders": order}


CpuByPart = Callable[[], dict[str, float]]


def process_tree_cpu(pid: int | None) -> float:
    """User + system CPU seconds of `pid` and its descendants (nginx: master + workers)."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def cluster_cpu(supervisor: Supervisor) -> CpuByPart:
    """CPU seconds so far per part of the cluster (the API instances together, nginx,
    pgbouncer, Redis, the worker) and of this process (the load generator)."""

    def read() -> dict[str, float]:
        own = psutil.Process().cpu_times()  # not its children: they are the cluster
        parts: dict[str, float] = {"loadgen": own.user + own.system}
        for name, child in supervisor.children.items():
            part = name.rsplit("-", 1)[0] if name[-1].isdigit() else name
            parts[part] = parts.get(part, 0.0) + process_tree_cpu(child.pid)
        return parts

    return read


def measure(
    port: int,
    ids: list[str],
    location: str,
    args: argparse.Namespace,
    token: str = "",
    *,
    server: Server | None = None,
    parts: CpuByPart | None = None,
    relayed_in: str | None = None,
) -> dict[str, Any]:
    """Both workloads against `port`. CPU is split into the server under test (`server`, the
    baseline) or the cluster's parts (`parts`: where the ceiling is), PostgreSQL, and the rest.
    With `relayed_in` (the database URL), each workload waits for the worker to publish
    every event first."""
    token = token or login(port, CUSTOMER)  # the baseline checks no token
    out: dict[str, Any] = {}
    for name, make in workloads(port, ids, location, token).items():
        if relayed_in:
            relayed(relayed_in)
        asyncio.run(closed_loop(port, make, args.connections, args.warmup))
        before, started = (parts() if parts else {}), time.monotonic()
        with Load(server) as load:
            result = asyncio.run(closed_loop(port, make, args.connections, args.duration))
        out[name] = {**result, **load.figures}
        if parts:
            wall, after = time.monotonic() - started, parts()
            out[name]["parts_cpu_pct"] = {
                part: round(100 * (after[part] - before.get(part, 0.0)) / wall) for part in after
            }
        print(f"    {name}: {json.dumps(out[name])}", flush=True)
    return out


async def with_cluster(url: str, apis: int, run_dir: Path, work: Any) -> Any:
    options = TopologyOptions(
        run_dir=run_dir,
        database_url=url,
        apis=apis,
        workers=1,
        app_env=APP_ENV,
        limits=EdgeLimits(rate="100000r/s", burst=100000, connections=60000),
        workdir=ROOT,
    )
    topology = build_topology(options, require(*required_binaries(options)))
    supervisor = Supervisor(topology.specs)
    try:
        await supervisor.start_all(ready_timeout=120)
        return await asyncio.to_thread(work, topology.ports.http, cluster_cpu(supervisor))
    finally:
        await supervisor.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--apis", type=int, action="append")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--database", default="shelfwise_bench_cluster")
    args = parser.parse_args()
    sizes = args.apis or [1, 2, 3]
    began = time.monotonic()
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    url, ids, location = prepare_seeded(2_000, args.database)
    results: dict[str, Any] = {"stamp": stamp, "loadavg_start": os.getloadavg(), "args": vars(args)}
    baseline = baseline_server(url, free_port(), RESULTS / f"{stamp}-cluster-baseline.log")
    baseline.start()
    try:
        baseline.wait_ready()
        print("== baseline (raw, no nginx)", flush=True)
        results["baseline"] = measure(
            baseline.port, ids, location, args, token="none", server=baseline
        )
    finally:
        baseline.stop()
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-cluster-") as tmp:
        for n in sizes:
            print(f"== {n} API instance(s) through nginx", flush=True)
            results[f"apis_{n}"] = asyncio.run(
                with_cluster(
                    url,
                    n,
                    Path(tmp) / f"c{n}",
                    lambda port, parts: measure(
                        port, ids, location, args, parts=parts, relayed_in=url
                    ),
                )
            )
    results["loadavg_end"] = os.getloadavg()
    results["elapsed_s"] = round(time.monotonic() - began, 1)
    out = RESULTS / f"{stamp}-cluster.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out.relative_to(ROOT)} ({results['elapsed_s']} s in all)")
    return 0


if __name__ == "__main__":
    urllib.request.getproxies = dict  # loopback only: never through an environment proxy
    sys.exit(main())
