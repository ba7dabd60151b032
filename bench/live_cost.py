"""What one live process spends per connect and per delivery, in CPU time.

    python -m bench.live_cost [--streams 5000] [--connect-rate 250] [--seconds 10]
                              [--compare OTHER_TREE] [--pairs 2]

One `serve --role api` (the writes), one `shelfwise worker` (the relay) and, in turn,
one `serve --role live` process per side. For each side:

1. **connects**: `--streams` SSE subscribers (`bench.rate sse`, staff token, `stock`)
   open at `--connect-rate` per second with no events flowing (unless
   `--events-while-connecting`); the live process's CPU
   time from the first connect until every stream is open, per stream opened, and the
   client's connect-to-headers time.
2. **deliveries**: stock adjustments at 20/s on the API process for `--seconds`; the
   live process's CPU time per event delivered and per client socket read (about one
   per write: one chunk to one connection), and the clients' lag, order and gap checks.
   The subscribers are spread over `--clients` processes: one process holding 5,000
   streams falls behind, and then its reads coalesce.

CPU time of one process barely depends on what else runs, so sides can be compared on a
busy machine; with `--compare` the live process of the other side runs the other tree's
code (`PYTHONPATH=OTHER_TREE/src`), alternated `--pairs` times with this tree's. Run it
under `flock /tmp/shelfwise-bench.lock`. Results: bench/results/<stamp>-live-cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.issues import (
    RESULTS,
    STAFF,
    collect,
    login,
    rate_client,
    raw,
    relayed,
    start_worker,
    stop,
)
from bench.servers import ROOT, Server, free_port, prepare_seeded, shelfwise_server

ADJUSTMENTS_PER_S = 20


def live_server(api: Server, tree: Path, log: Path) -> Server:
    port = free_port()
    env = {**api.env, "SHELFWISE_SERVER_ROLE": "live", "SHELFWISE_INSTANCE_ID": f"live-{port}"}
    if tree != ROOT:
        env["PYTHONPATH"] = str(tree / "src")
    argv = [*api.argv[: api.argv.index("--port")], "--port", str(port)]
    return Server(name="live", argv=argv, env=env, port=port, log_path=log)


def adjustments(api: Server, args: argparse.Namespace, tmp: Path, n: int) -> subprocess.Popen[str]:
    """Stock adjustments at 20/s on the API process until the side's stop file exists."""
    return rate_client(
        "fixed",
        api.port,
        args.adjustments,
        tmp,
        rate=ADJUSTMENTS_PER_S,
        duration=args.streams / args.connect_rate * 3 + args.seconds + 120,
        stop_file=tmp / f"stop-{n}",
    )


def side(
    api: Server, tree: Path, args: argparse.Namespace, tmp: Path, auth: dict[str, str], n: int
) -> dict[str, Any]:
    stamp = f"{args.stamp}-{n}"
    live = live_server(api, tree, RESULTS / f"{stamp}-live-cost-live.log")
    live.start()
    adjust = None
    try:
        live.wait_ready()
        stream = raw(
            "GET", "/v1/stream?channels=stock", live.port, {**auth, "Accept": "text/event-stream"}
        )
        ready = [tmp / f"ready-{n}-{i}" for i in range(args.clients)]
        go = tmp / f"go-{n}"
        settle = args.streams / args.connect_rate * 3 + 30
        if args.events_while_connecting:
            adjust = adjustments(api, args, tmp, n)
        cpu0 = live.cpu_seconds()
        t0 = time.monotonic()
        subs = [
            rate_client(
                "sse",
                live.port,
                [stream],
                tmp,
                subscribers=args.streams // args.clients,
                duration=args.seconds,
                ramp=args.connect_rate / args.clients,
                settle=settle,
                ready_file=path,
                go_file=go,
            )
            for path in ready
        ]
        while not all(path.exists() for path in ready) and all(p.poll() is None for p in subs):
            time.sleep(0.05)
        connect_wall = time.monotonic() - t0
        connect_cpu = live.cpu_seconds() - cpu0
        adjust = adjust or adjustments(api, args, tmp, n)
        time.sleep(3)  # the relay and the hub at their steady pace
        cpu1 = live.cpu_seconds()
        go.touch()
        time.sleep(args.seconds)
        cpu2 = live.cpu_seconds()
        parts = [collect(p, timeout=60) for p in subs]
        client = {
            key: sum(part[key] for part in parts)
            for key in ("open", "events_received", "reads", "out_of_order", "missing", "lost_total")
        }
        client["p50_ms"] = max(part["p50_ms"] for part in parts)
        client["p99_ms"] = max(part["p99_ms"] for part in parts)
        client["connect"] = [part["connect"] for part in parts]
        (tmp / f"stop-{n}").touch()
        adjusted = collect(adjust, timeout=30)
        adjust = None
        deliver_cpu = cpu2 - cpu1
        events = max(client["events_received"], 1)
        written = max(client["reads"], 1)  # (a read per write while the clients keep up)
        return {
            "tree": str(tree),
            "streams_open": client["open"],
            "connect": {
                "wall_s": round(connect_wall, 1),
                "live_cpu_s": round(connect_cpu, 2),
                "live_cpu_ms_per_connect": round(1e3 * connect_cpu / max(client["open"], 1), 3),
                "client_connect_to_headers": client["connect"],
            },
            "deliver": {
                "live_cpu_pct": round(100 * deliver_cpu / args.seconds),
                "events_delivered": client["events_received"],
                "client_reads": written,
                "events_per_read": round(client["events_received"] / written, 2),
                "live_cpu_us_per_event": round(1e6 * deliver_cpu / events, 2),
                "live_cpu_us_per_read": round(1e6 * deliver_cpu / written, 2),
                "lag_p50_ms_worst_client": client["p50_ms"],
                "lag_p99_ms_worst_client": client["p99_ms"],
                "out_of_order": client["out_of_order"],
                "missing": client["missing"],
                "lost": client["lost_total"],
                "adjustments": adjusted["statuses"],
            },
            "loadavg": os.getloadavg(),
        }
    finally:
        if adjust is not None:
            adjust.kill()
        live.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--connect-rate", type=float, default=250.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=2, help="subscriber client processes")
    parser.add_argument("--compare", type=Path, help="another checkout: its src/ as the B side")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument(
        "--events-while-connecting",
        action="store_true",
        help="the adjustments run during the connects too (as in bench.issues' ramp)",
    )
    parser.add_argument(
        "--database",
        default="shelfwise_bench_live",
        help="in var/bench; its own by default: other benchmarks' orders expire into the "
        "shared one as bursts of thousands of stock events",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    url, ids, location = prepare_seeded(10_000, args.database)
    env = {"SHELFWISE_RATE_LIMIT_ENABLED": "false", "SHELFWISE_SERVER_ROLE": "api"}
    api = shelfwise_server(
        url, free_port(), RESULTS / f"{args.stamp}-live-cost-api.log", log_json=True, extra_env=env
    )
    worker = None
    trees = [ROOT] + ([args.compare.resolve()] if args.compare else [])
    results: dict[str, Any] = {
        "stamp": args.stamp,
        "args": {**vars(args), "compare": str(args.compare)},
        "runs": [],
    }
    try:
        api.start()
        api.wait_ready()
        worker = start_worker(url, RESULTS / f"{args.stamp}-live-cost-worker.log")
        relayed(url)
        auth = {"Authorization": f"Bearer {login(api.port, STAFF)}"}
        body = {"location_id": location, "kind": "receipt", "quantity": 1, "reason": "bench"}
        args.adjustments = [
            raw(
                "POST",
                "/v1/stock/adjustments",
                api.port,
                auth,
                json.dumps({**body, "product_id": p}),
            )
            for p in ids[:2000]
        ]
        with tempfile.TemporaryDirectory(prefix="shelfwise-live-cost-") as tmp:
            n = 0
            for _ in range(args.pairs if args.compare else 1):
                for tree in trees:
                    n += 1
                    result = side(api, tree, args, Path(tmp), auth, n)
                    results["runs"].append(result)
                    print(json.dumps(result), flush=True)
    finally:
        if worker is not None:
            stop(worker)
        api.stop()
        out = RESULTS / f"{args.stamp}-live-cost.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
