"""Shelfwise beside both baselines, for orders and cached reads, with 1 or N workers.

    python -m bench.stack [--workers 1] [--duration 10] [--warmup 3] [--rounds 1]
                          [--quiet-wait 0] [--skip-reads | --reads-only]

Three servers, each with the same number of uvicorn workers:

- `shelfwise`: `shelfwise serve [--workers N]` (rate limiting off: one client IP);
- `baseline`: `bench.baseline`, the raw ceiling (FastAPI + asyncpg, three statements per
  order: no idempotency, no ledger, one bench event);
- `samework`: `bench.samework`, exactly Shelfwise's statements for a one-line order on
  the same driver, with no stack around them.

The database of a step is a copy made for it in `var/bench`'s cluster: a seeded template
(10,000 products, demo users and locations; built once per migration and seed version,
`bench.servers.seeded_template`) copied with `CREATE DATABASE … TEMPLATE`, VACUUM
ANALYZEd and CHECKPOINTed, then dropped when the step ends (also on failure, Ctrl-C or
SIGTERM; copies left by a killed run are dropped by the next). Every order step gets a
fresh copy: each side starts from the same rows, and none pays for the vacuum of what
another wrote or for what other benchmarks left in the shared `shelfwise_bench` (millions
of outbox rows, a 1M-row import, released reservations), which moved the baselines' figures
by ±30 % between runs minutes apart. The copy is ANALYZEd once more after the warm-up:
its tables start empty, and a table analyzed empty is planned as one (`analyze`). The
reads part runs on one copy of its own.

Orders: `POST /v1/orders`, one line of a random product of 10,000, 64 keep-alive
connections in a closed loop (a Python client in its own process: wrk is not installed),
fresh `Idempotency-Key` per request (as `bench.issues --part orders`). With `--rounds N`
the sides run N times, every other round in reverse order (2: shelfwise, samework,
baseline, then baseline, samework, shelfwise), so no side always runs first or last; each
side's figures are the median of its rounds, figure by figure (with two rounds, their
mean), every round's figures are kept under `rounds` and their spread under
`spread_pct`. Reads: `GET /v1/products/{id}` of a random id, shelfwise and baseline only
(the same-work baseline has no catalog route), one round.

Reported per step: throughput, latency, server CPU per request (the server's whole
process tree: with N workers, its children) and PostgreSQL CPU per request (the bench
cluster's processes: cluster-wide, so `other_db_xacts` counts the transactions other
databases of it ran meanwhile; `db_backend_cpu_us_per_req` counts only the processes
working for the step's database). `rest_cpu_pct` is everything else the machine ran, the
order client included: `client_cpu_pct` is the client's share, `neighbour_cpu_pct` the
rest (on a shared 2-core machine, other work inflates every side's CPU per request;
`--quiet-wait S` waits up to S seconds for an idle machine before each order step, and
`quiet` says whether it came). Ratios: shelfwise / baseline and shelfwise / samework of
the medians' throughput (`orders_ratios`) and of their server CPU per request
(`orders_cpu_ratios`: above 1, Shelfwise spends more).

Before an order step, the products with fewer than 10 units available are left out of
the order bodies (`orders_stock`; on a fresh copy of the seed, none): a refused order
(409) costs a round trip of its own and would skew the figures. `orders_database` names
the template, its row counts at the start and the copies dropped for a killed run; each
round names its copy (`database`) and how long copying took (`copy_s`).

Results: bench/results/<stamp>-stack.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy.engine import make_url

from bench.drivers import LoadSpec, pick_tool, run_load
from bench.issues import CUSTOMER, DRAIN_S, Load, integrity, login
from bench.loadgen import _read_response, percentile
from bench.readtail import scrape
from bench.run import wait_for_quiet
from bench.servers import (
    BIN,
    ROOT,
    Server,
    baseline_server,
    database_copy,
    databases,
    drop_database,
    free_port,
    interpreter,
    orderable_products,
    psycopg_autocommit,
    release_expired_reservations,
    row_counts,
    samework_server,
    seeded_template,
    shelfwise_server,
)

RESULTS = ROOT / "bench" / "results"
PRODUCTS = 10_000
SIDES = ("shelfwise", "samework", "baseline")
# A step's database is named after the run's process, so the next run can tell a copy
# left by a killed run (its process gone) from one a concurrent run is using.
COPY_PREFIX = "shelfwise_bench_stack_"
SPREAD_KEYS = (
    "rps",
    "p99_ms",
    "server_cpu_us_per_req",
    "db_cpu_us_per_req",
    "db_backend_cpu_us_per_req",
)


# -- the order client (a subprocess: wrk is not installed here) ---------------------------


async def _order_client(
    port: int, token: str, bodies: list[str], connections: int, duration: float
) -> dict[str, Any]:
    """Closed loop: each connection POSTs a random body with a fresh Idempotency-Key."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + duration

    async def loop(n: int) -> None:
        rng = random.Random()  # unseeded: the run must not replay the warm-up's keys
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 0
        while (start := time.perf_counter()) < deadline:
            count += 1
            body = rng.choice(bodies).encode()
            head = (
                f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nIdempotency-Key: bench-{n}-{count}-"
                f"{rng.getrandbits(64):016x}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            status, close = await _read_response(reader)
            latencies.append(time.perf_counter() - start)
            statuses[status] = statuses.get(status, 0) + 1
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop(n) for n in range(connections)))
    wall = time.perf_counter() - started
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "rps": round(len(lat) / wall, 1),
        "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
        "p90_ms": round(percentile(lat, 0.9) * 1000, 1),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "201": statuses.get(201, 0),
        "409": statuses.get(409, 0),
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "other": sum(v for k, v in statuses.items() if k not in (201, 409) and k < 500),
    }


def post_orders(port: int, token: str, bodies: Path, seconds: float) -> dict[str, Any]:
    argv = [str(BIN / "python"), "-m", "bench.stack", "client", "--port", str(port)]
    argv += ["--bodies", str(bodies), "--duration", str(seconds)]
    env = {**os.environ, "BENCH_TOKEN": token}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def client_main(argv: list[str]) -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    bodies = [line for line in Path(args.bodies).read_text().splitlines() if line]
    token = os.environ["BENCH_TOKEN"]
    run = _order_client(args.port, token, bodies, args.connections, args.duration)
    print(json.dumps(uvloop.run(run)))


def up(servers: dict[str, Server], name: str) -> Server:
    """Start `name` and stop the others: one server at a time holds pool connections
    (three servers with two workers each, plus other runs, exceeded max_connections)."""
    for other, server in servers.items():
        if other != name and server.process is not None and server.process.poll() is None:
            server.stop()
    server = servers[name]
    if server.process is None or server.process.poll() is not None:
        server.process = None
        server._stop_sampling.clear()
        server.start()
        server.wait_ready()
    return server


def per_request(result: dict[str, Any], load: Load) -> None:
    """Server and PostgreSQL CPU per request, in µs, over the measured step."""
    requests = max(1, int(result["requests"]))
    result["server_cpu_us_per_req"] = round(load.seconds["server_cpu"] / requests * 1e6)
    result["db_cpu_us_per_req"] = round(load.seconds["db_cpu"] / requests * 1e6)


def stock_for_orders(url: str, ids: list[str], location: str) -> tuple[dict[str, Any], list[str]]:
    """Release expired reservations (no worker runs on the bench database), then the
    products an order step can buy without a refusal; prints and returns the stock state."""
    stock: dict[str, Any] = dict(release_expired_reservations(url, location))
    orderable = orderable_products(url, ids, location)
    stock["orderable_products"] = len(orderable)
    print(f"  stock before orders {json.dumps(stock)}", flush=True)
    return stock, orderable


def step_order(rounds: int) -> list[tuple[int, str]]:
    """(round, side) in run order: odd rounds in `SIDES` order, even ones reversed, so
    with an even number of rounds every side runs first as often as last."""
    return [
        (n, side)
        for n in range(1, rounds + 1)
        for side in (SIDES if n % 2 else tuple(reversed(SIDES)))
    ]


def side_server(side: str, url: str, log: Path, workers: int) -> Server:
    if side == "shelfwise":
        return shelfwise_server(
            url,
            free_port(),
            log,
            log_json=True,
            extra_env={"SHELFWISE_RATE_LIMIT_ENABLED": "false"},
            workers=workers,
        )
    make = {"baseline": baseline_server, "samework": samework_server}[side]
    return make(url, free_port(), log, workers)


def write_bodies(path: Path, products: list[str], location: str) -> None:
    path.write_text(
        "".join(
            json.dumps(
                {"lines": [{"product_id": p, "quantity": 1}], "location_id": location},
                separators=(",", ":"),
            )
            + "\n"
            for p in products
        )
    )


def order_step(ctx: dict[str, Any], args: argparse.Namespace, n: int, side: str) -> dict[str, Any]:
    """One side's round on a fresh copy of the template: warm-up, drain, measured step."""
    name = f"{COPY_PREFIX}{os.getpid()}_{n}_{side}"
    started = time.monotonic()
    with database_copy(ctx["template"], name) as url:
        copy_s = time.monotonic() - started
        stock, orderable = stock_for_orders(url, ctx["ids"], ctx["location"])
        rows = row_counts(url)
        bodies = ctx["tmp"] / "orders.bodies"
        write_bodies(bodies, orderable, ctx["location"])
        log = RESULTS / f"{ctx['stamp']}-stack-{side}-r{n}.log"
        server = side_server(side, url, log, args.workers)
        try:
            up({side: server}, side)
            if side == "shelfwise":  # tokens live 10 minutes: a fresh one per step
                ctx["token"] = login(server.port, CUSTOMER)
            # The baselines take the customer from their database, not from the token.
            token = ctx.get("token") or "unused"
            quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait else None
            post_orders(server.port, token, bodies, args.warmup)
            time.sleep(DRAIN_S)  # requests abandoned at the end of the warm-up finish
            analyze(url)
            others, client = other_transactions(url), children_cpu_seconds()
            backends = BackendCpu(url)
            with Load(server) as load:
                result = post_orders(server.port, token, bodies, args.duration)
            client = children_cpu_seconds() - client
            result.update(load.figures, other_db_xacts=other_transactions(url) - others)
            result.update(backends.figures(int(result["requests"])))
            # rest_cpu_pct holds the order client too; what is left is the neighbours'.
            result["client_cpu_pct"] = round(100 * client / load.seconds["wall"])
            result["neighbour_cpu_pct"] = result["rest_cpu_pct"] - result["client_cpu_pct"]
            result["quiet"] = quiet
            per_request(result, load)
            time.sleep(DRAIN_S)  # in-flight requests commit before the server stops
        finally:
            server.stop()
        if side != "baseline":  # the raw baseline writes no ledger: nothing to reconcile
            result["integrity"] = integrity(url)
    result.update(round=n, database=name, copy_s=round(copy_s, 2), stock=stock, rows=rows)
    return result


def analyze(url: str) -> None:
    """ANALYZE the copy after the warm-up. The template has no orders, and a table
    analyzed empty is planned as empty: until autovacuum's ANALYZE came (up to a minute
    in, at a different moment each run), every order's look-up in `orders` was a
    sequential scan of a growing table (3,030 scans reading 2.2 M rows in a same-work
    step's first 5 s), and PostgreSQL's CPU per order moved 2x between runs on
    identical copies. The statistics' change replans the servers' statements."""
    with psycopg_autocommit(url) as conn:
        conn.execute("ANALYZE")


def children_cpu_seconds() -> float:
    """CPU time of this process's children that have exited: the order client of a step
    (`post_orders` waits for it); the servers count only once stopped."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class BackendCpu:
    """CPU of the PostgreSQL processes working for one database (its client backends and
    autovacuum workers), from the start of a step to `figures`: unlike `db_cpu_pct`, none
    of another database's work (another benchmark's queries, the vacuum of a shared
    database) and none of the cluster's shared processes (WAL writer, checkpointer).
    A backend that exits within the step takes its CPU with it: `db_backends_gone`."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.start = self._sample()

    def _sample(self) -> dict[int, float]:
        with psycopg_autocommit(self.url) as conn:
            pids = [
                int(row[0])
                for row in conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ]
        cpu = {}
        for pid in pids:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            cpu[pid] = times.user + times.system
        return cpu

    def figures(self, requests: int) -> dict[str, int]:
        end = self._sample()
        used = sum(cpu - self.start.get(pid, 0.0) for pid, cpu in end.items())
        return {
            "db_backend_cpu_us_per_req": round(used / max(1, requests) * 1e6),
            "db_backends_gone": len(self.start.keys() - end.keys()),
        }


def other_transactions(url: str) -> int:
    """Transactions the cluster's other databases have ended so far: `db_cpu_pct` is the
    whole cluster's, so a step with many of them shares its PostgreSQL CPU with them."""
    with psycopg_autocommit(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database"
            " WHERE datname IS DISTINCT FROM current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def median_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each numeric figure's median over the rounds (the keys a single round has), the
    first integrity check that was not clean (else the last), and every round as run."""
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if key in ("round", "copy_s") or isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            median = statistics.median(float(r[key]) for r in rounds)
            out[key] = int(median) if median.is_integer() else round(median, 1)
    checks = [r["integrity"] for r in rounds if "integrity" in r]
    if checks:
        clean = [c["oversold_levels"] == 0 and c["reconcile_exit"] == 0 for c in checks]
        out["integrity"] = next(
            (c for c, ok in zip(checks, clean, strict=True) if not ok), checks[-1]
        )
    if len(rounds) > 1:
        out["spread_pct"] = {
            key: spread([float(r[key]) for r in rounds]) for key in SPREAD_KEYS if key in rounds[0]
        }
    out["rounds"] = rounds
    return out


def spread(values: list[float]) -> float:
    """(max - min) / median, in %: how far a side's rounds lie apart."""
    median = statistics.median(values)
    return round(100 * (max(values) - min(values)) / median, 1) if median else 0.0


def orders(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for n, side in step_order(args.rounds):
        result = order_step(ctx, args, n, side)
        runs[side].append(result)
        brief = {k: v for k, v in result.items() if k not in ("stock", "rows")}
        print(f"  orders {side:<10} round {n} {json.dumps(brief)}", flush=True)
    ctx["orders_stock"] = runs[SIDES[0]][0]["stock"]
    return {side: median_figures(rounds) for side, rounds in runs.items()}


def reads(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Cached reads, baseline then shelfwise, on one copy of the template (reads write
    nothing a second side could notice)."""
    paths = ctx["tmp"] / "reads.paths"
    paths.write_text("".join(f"/v1/products/{p}\n" for p in ctx["ids"]))
    tool = pick_tool("auto")
    out: dict[str, dict[str, Any]] = {}
    with database_copy(ctx["template"], f"{COPY_PREFIX}{os.getpid()}_reads") as url:
        for target in ("baseline", "shelfwise"):
            log = RESULTS / f"{ctx['stamp']}-stack-{target}-reads.log"
            server = side_server(target, url, log, args.workers)
            try:
                out[target] = read_step(ctx, args, up({target: server}, target), tool, paths)
            finally:
                server.stop()
            print(f"  reads  {target:<10} {json.dumps(out[target])}", flush=True)
    return out


def read_step(
    ctx: dict[str, Any], args: argparse.Namespace, server: Server, tool: str, paths: Path
) -> dict[str, Any]:
    shelfwise = server.name == "shelfwise"
    # Every id read once first, so the cache holds all of them (the issue's "every id
    # cached"): a timed random pass covered only ~half of them (run 20261206T084514Z).
    # With N workers each has its own cache and a connection lands on any of them:
    # repeat the pass (at most 3 x N) until one adds no miss.
    passes = 3 * args.workers if shelfwise and args.workers > 1 else 1
    misses = warm_reads(server.port, ctx["ids"], ctx["tmp"], passes)
    run_load(tool, LoadSpec(server.port, paths, 64, args.warmup))
    with Load(server) as load:
        res = run_load(tool, LoadSpec(server.port, paths, 64, args.duration))
    result = {
        "requests": res.requests,
        "rps": round(res.rps, 1),
        "p50_ms": res.p50_ms,
        "p90_ms": res.p90_ms,
        "p99_ms": res.p99_ms,
        "max_ms": res.max_ms,
        "errors": res.errors,
        **load.figures,
    }
    # After the full warm pass: 0 unless something evicted. With N workers /metrics is
    # answered by any one of them, so two scrapes do not subtract: not reported.
    if shelfwise and args.workers == 1:
        result["cache_misses"] = product_cache_misses(server.port) - misses
    per_request(result, load)
    return result


def warm_reads(port: int, ids: list[str], tmp: Path, passes: int = 1) -> float:
    """Read every id once per pass (bench.readtail's warm-up client); more passes stop
    once one adds no product cache miss. Returns the miss counter after the last pass
    (0 where there is no such metric: the baseline)."""
    ids_file = tmp / "reads.ids.json"
    ids_file.write_text(json.dumps(ids))
    argv = [str(BIN / "python"), "-m", "bench.readtail", "client", "--port", str(port)]
    argv += ["--ids", str(ids_file), "--warm-only"]
    misses = -1.0
    for _ in range(passes):
        subprocess.run(argv, cwd=ROOT, check=True, timeout=300)
        try:
            now = product_cache_misses(port)
        except OSError:  # the baseline serves no /metrics
            return 0.0
        if now == misses:
            break
        misses = now
    return misses


def product_cache_misses(port: int) -> float:
    return scrape(port)["cache_miss"]


def ratios(part: dict[str, dict[str, Any]], key: str = "rps") -> dict[str, float]:
    """shelfwise / each other side, of `key` (with rounds, of the medians)."""
    sw = part["shelfwise"][key]
    return {f"vs_{k}": round(sw / v[key], 2) for k, v in part.items() if k != "shelfwise"}


def drop_abandoned_copies(url: str) -> list[str]:
    """Drop the step databases of runs whose process is gone (killed before its
    `finally`); a running run's copies are left alone."""
    dropped = []
    for name in databases(url, COPY_PREFIX):
        pid = name.removeprefix(COPY_PREFIX).split("_", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            drop_database(url, name)
            dropped.append(name)
    return dropped


def prepare(results: dict[str, Any]) -> tuple[str, list[str], str]:
    """The template (built if its version is new), checked and described in `results`."""
    started = time.monotonic()
    template, ids, location, built = seeded_template(PRODUCTS)
    info: dict[str, Any] = {
        "template": make_url(template).database,
        "template_built": built,
        "template_s": round(time.monotonic() - started, 2),
        "abandoned_copies_dropped": drop_abandoned_copies(template),
        "rows_at_start": row_counts(template),
    }
    print(f"  database {json.dumps(info)}", flush=True)
    results["orders_database"] = info
    # A template that does not reconcile would be blamed on every side.
    results["integrity_at_start"] = integrity(template)
    print(f"  integrity at start {results['integrity_at_start']}", flush=True)
    return template, ids, location


def checkout() -> str:
    """The commit measured, `-dirty` when the working tree differs from it (other work
    in progress in the same checkout is measured too)."""
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="order steps per side, in alternating order"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each order step, wait up to this many seconds for an idle machine "
        "(`quiet` in the step's figures: false if it never was)",
    )
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--reads-only", action="store_true", help="skip the orders part")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    # `timeout N python -m bench.stack` sends SIGTERM: leave through `finally` (servers
    # stopped, the step's database dropped) as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "stamp": stamp,
        "args": vars(args),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "commit": checkout(),
        "python": interpreter(),
    }
    try:
        template, ids, location = prepare(results)
        with tempfile.TemporaryDirectory(prefix="shelfwise-stack-") as tmp:
            ctx = {
                "template": template,
                "ids": ids,
                "location": location,
                "stamp": stamp,
                "tmp": Path(tmp),
            }
            if not args.reads_only:
                results["orders"] = orders(ctx, args)
                results["orders_stock"] = ctx["orders_stock"]
                results["orders_ratios"] = ratios(results["orders"])
                results["orders_cpu_ratios"] = ratios(results["orders"], "server_cpu_us_per_req")
                print(f"  orders ratios {results['orders_ratios']}", flush=True)
                print(f"  orders CPU ratios {results['orders_cpu_ratios']}", flush=True)
            if not args.skip_reads:
                results["reads"] = reads(ctx, args)
                results["reads_ratios"] = ratios(results["reads"])
                print(f"  reads ratios {results['reads_ratios']}", flush=True)
    finally:
        results["loadavg_end"] = os.getloadavg()
        out = RESULTS / f"{stamp}-stack.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
