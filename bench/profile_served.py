"""The served process's CPU per `POST /v1/orders`, through a real socket; A/B against
another source tree, alternated in the same minutes.

    python -m bench.profile_served [--duration 10] [--pairs 2] [--base /tmp/tree/src]
                                   [--py-spy out.txt]

Runs `shelfwise serve` exactly as `bench.stack` does (uvicorn, uvloop, httptools, one
worker, access log on, JSON logs, rate limiting off) on the bench database, and drives it
with `bench.stack`'s order client (64 keep-alive connections, one-line orders, fresh
`Idempotency-Key`s) in its own process. Reports the server process's CPU per order
(user + system, measured around the window), throughput and latency. Before every window
the expired reservations are released (no worker runs on the bench database) and the
products with fewer than 10 units available are left out, so that no order is refused.

`--base SRC` also runs the server with `PYTHONPATH=SRC` (another tree's `src/`, e.g.
`git archive <sha> src | tar -x -C /tmp/base`) and alternates base and current `--pairs`
times: on a shared two-core machine only figures taken in the same minutes compare.
`--tree SRC` runs the current side from such a tree too (not the working copy, which
may hold others' unfinished edits). `--py-spy OUT` samples the current tree's server
during its first window with py-spy (`PY_SPY` names the binary; a throwaway venv, never
a project dependency) and prints the heaviest frames, self and cumulative. Its samples
are wall-clock: on a busy host they pile up at system calls that wake another process
(a send to PostgreSQL, a response write), where the server is preempted — compare its
active share with `server_cpu_pct`, and trust the CPU figures over the shares.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.issues import CUSTOMER, DRAIN_S, Load, login
from bench.servers import Server, free_port, prepare_database, shelfwise_server
from bench.stack import post_orders, stock_for_orders, up


def _bodies(path: Path, ids: list[str], location: str) -> None:
    line = {"lines": [{"product_id": "", "quantity": 1}], "location_id": location}
    rows = []
    for product in ids:
        line["lines"][0]["product_id"] = product  # type: ignore[index]
        rows.append(json.dumps(line, separators=(",", ":")) + "\n")
    path.write_text("".join(rows))


def _spy(pid: int, seconds: float, out: str) -> subprocess.Popen[bytes]:
    binary = os.environ.get("PY_SPY", "/tmp/pyspy/bin/py-spy")
    argv = [binary, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "250"]
    argv += ["-f", "raw", "-o", out]
    # `PY_SPY_ARGS=--native` for C frames (py-spy then pauses the process to unwind it).
    extra = os.environ.get("PY_SPY_ARGS", "").split()
    argv += extra if "--native" in extra else ["--nonblocking", *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize_spy(path: str, top: int = 40) -> None:
    """Collapsed stacks (`frame;frame;... count`) → self and cumulative shares."""
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    total = 0
    for row in Path(path).read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            cumulative[frame] += n
    print(f"\npy-spy: {total} samples")
    for title, counter in (("self", own), ("cumulative", cumulative)):
        print(f"-- {title}")
        for frame, n in counter.most_common(top):
            print(f"  {n / total * 100:5.1f} %  {frame[:150]}")


def _thread_cpu(pid: int) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def measure(
    server: Server, token: str, bodies: Path, args: argparse.Namespace, spy: str | None
) -> dict[str, Any]:
    post_orders(server.port, token, bodies, args.warmup)
    time.sleep(DRAIN_S)  # the warm-up's abandoned requests finish first
    assert server.process is not None
    spying = _spy(server.process.pid, args.duration, spy) if spy else None
    threads_before = _thread_cpu(server.process.pid)
    times_before = psutil.Process(server.process.pid).cpu_times()
    with Load(server) as load:
        started = time.monotonic()
        result = post_orders(server.port, token, bodies, args.duration)
        wall = time.monotonic() - started
    threads_after = _thread_cpu(server.process.pid)
    times_after = psutil.Process(server.process.pid).cpu_times()
    done = max(1, result["requests"])
    # User vs kernel: the socket's and the database connections' system calls are kernel.
    result["user_us_per_order"] = round((times_after.user - times_before.user) / done * 1e6)
    result["system_us_per_order"] = round((times_after.system - times_before.system) / done * 1e6)
    # CPU per order of each thread: the event loop's, and any other (pools, hasher, logs).
    result["thread_cpu_us_per_order"] = {
        tid: round((cpu - threads_before.get(tid, 0.0)) / max(1, result["requests"]) * 1e6)
        for tid, cpu in threads_after.items()
        if cpu - threads_before.get(tid, 0.0) > 0.005
    }
    if spying is not None:
        spying.wait(30)
    result.update(load.figures)
    cpu_s = result["server_cpu_pct"] / 100 * wall
    result["server_cpu_us_per_order"] = round(cpu_s / max(1, result["requests"]) * 1e6)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--base", help="another tree's src/ to alternate with")
    parser.add_argument("--tree", help="the current side's src/ (default: this checkout's)")
    parser.add_argument("--py-spy", dest="spy", help="collapsed stacks of the first window")
    args = parser.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    url, ids = prepare_database(10_000)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM locations WHERE code = 'WH-NORTH'").fetchone()
        assert row is not None
        location = str(row[0])
    sides = {"current": args.tree, **({"base": args.base} if args.base else {})}
    results: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="shelfwise-served-") as tmp:
        bodies = Path(tmp) / "orders.bodies"
        spy = args.spy
        for _ in range(args.pairs):
            for side, src in sides.items():
                # Every window starts with the same stock state and orders only what is
                # in stock: a refusal (409) costs another round trip and skews the figure.
                _, orderable = stock_for_orders(url, ids, location)
                _bodies(bodies, orderable, location)
                env = {"SHELFWISE_RATE_LIMIT_ENABLED": "false"}
                if src:
                    env["PYTHONPATH"] = src
                server = shelfwise_server(
                    url, free_port(), Path(tmp) / f"{side}.log", log_json=True, extra_env=env
                )
                try:
                    try:
                        up({side: server}, side)
                    except RuntimeError:
                        print(server.log_path.read_text()[-3000:], flush=True)
                        raise
                    token = login(server.port, CUSTOMER)
                    result = measure(
                        server, token, bodies, args, spy if side == "current" else None
                    )
                finally:
                    server.stop()
                if side == "current":
                    spy = None
                results.append((side, result))
                print(f"{time.strftime('%H:%M:%S')} {side:<8} {json.dumps(result)}", flush=True)
    print("\nserver CPU per order (us):")
    for side in sides:
        figures = [r["server_cpu_us_per_order"] for s, r in results if s == side]
        print(f"  {side:<8} {figures}")
    if args.spy:
        summarize_spy(args.spy)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
