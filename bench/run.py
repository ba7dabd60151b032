"""`make bench`: load-test Shelfwise against a raw baseline app on this machine.

    python -m bench.run [--duration 15] [--warmup 3] [--connections 64] [--products 10000]
                        [--scenario product_by_id --scenario list_50] [--loadgen auto]

Steps: start the benchmark's own embedded PostgreSQL (var/bench), migrate, seed; start
`shelfwise serve` (access log on) and `bench/baseline.py`, each one uvicorn worker on a
free 127.0.0.1 port; for every scenario, warm each server up, then measure it; print the
table and PASS/FAIL per target; write bench/results/<timestamp>.json. Every child process
is stopped on the way out, including on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from bench.drivers import LoadSpec, pick_tool, run_load
from bench.report import Run, judge, memory_lines, table, verdict_lines, write_json
from bench.scenarios import SCENARIOS, BenchData, Scenario
from bench.servers import (
    ROOT,
    Server,
    baseline_server,
    cluster_cpu_seconds,
    free_port,
    prepare_database,
    shelfwise_server,
)

RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_SCENARIOS = ("product_by_id", "list_50")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description="Benchmark Shelfwise against a raw baseline."
    )
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--products", type=int, default=10_000, help="products to seed")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help=f"repeatable; default: {', '.join(DEFAULT_SCENARIOS)}",
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "builtin"), default="auto")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default="json",
        help="Shelfwise's log renderer; json is what production writes",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.duration > 600 or args.warmup < 0 or args.warmup > 60:
        parser.error("--duration must be in (0, 600] and --warmup in [0, 60]")
    if not 1 <= args.connections <= 1024:
        parser.error("--connections must be in [1, 1024]")
    return args


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def measure(
    tool: str, server: Server, paths_file: Path, args: argparse.Namespace, name: str
) -> Run:
    spec = LoadSpec(server.port, paths_file, args.connections, args.duration, args.wrk_threads)
    if args.warmup:
        warm = LoadSpec(server.port, paths_file, args.connections, args.warmup, args.wrk_threads)
        run_load(tool, warm)
    cpu, db_cpu = server.cpu_seconds(), cluster_cpu_seconds()
    load = run_load(tool, spec)
    run = Run(name, server.name, load, server.cpu_seconds() - cpu, cluster_cpu_seconds() - db_cpu)
    print(
        f"  {name:<16}{server.name:<11}{load.rps:>9,.0f} rps  p99 {load.p99_ms:6.1f} ms"
        f"  errors {load.errors}  server cpu {run.server_cpu_pct:.0f}%",
        flush=True,
    )
    return run


def benchmark(args: argparse.Namespace, scenarios: list[Scenario], stamp: str) -> int:
    tool = pick_tool(args.loadgen)
    started = time.time()
    print(f"seeding {args.products:,} products into var/bench ...", flush=True)
    url, ids = prepare_database(args.products)
    data = BenchData(product_ids=ids)
    servers = {
        "shelfwise": shelfwise_server(
            url, free_port(), RESULTS_DIR / f"{stamp}-shelfwise.log", args.log_format == "json"
        ),
        "baseline": baseline_server(url, free_port(), RESULTS_DIR / f"{stamp}-baseline.log"),
    }
    runs: list[Run] = []
    try:
        for server in servers.values():
            server.start()
        for server in servers.values():
            server.wait_ready()
        print(f"load generator: {tool}; {args.connections} connections, {args.duration:g}s runs")
        psutil.cpu_percent()  # start the machine-wide CPU window
        with tempfile.TemporaryDirectory(prefix="shelfwise-bench-") as tmp:
            for sc in scenarios:
                paths_file = Path(tmp) / f"{sc.name}.paths"
                paths_file.write_text("\n".join(sc.paths(data)) + "\n", encoding="utf-8")
                targets = ["shelfwise", "baseline"] if sc.baseline else ["shelfwise"]
                for name in targets:
                    runs.append(measure(tool, servers[name], paths_file, args, sc.name))
        machine_cpu = psutil.cpu_percent()
    finally:
        for server in servers.values():
            server.stop()

    usage = {name: server.usage for name, server in servers.items()}
    verdicts = judge(scenarios, runs, usage)
    print()
    print(table(runs, scenarios))
    print()
    print("\n".join(memory_lines(usage)))
    print()
    print("\n".join(verdict_lines(verdicts)))
    meta: dict[str, Any] = {
        "timestamp": stamp,
        "elapsed_s": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_end": os.getloadavg(),
            "cpu_pct_during_runs": machine_cpu,
        },
        "config": {
            "loadgen": tool,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "products": len(ids),
            "log_format": args.log_format,
            "access_log": True,
            "workers": 1,
        },
    }
    out = RESULTS_DIR / f"{stamp}.json"
    write_json(out, meta, runs, usage, verdicts)
    print(f"\nresults: {out.relative_to(ROOT)}  (server logs beside it)")
    failed = not all(v.passed for v in verdicts)
    return 1 if failed and args.strict else 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [SCENARIOS[name] for name in dict.fromkeys(args.scenario or DEFAULT_SCENARIOS)]
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")  # pgserver's lock directory
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return benchmark(args, scenarios, stamp)
    except KeyboardInterrupt:
        print("\ninterrupted; servers stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
