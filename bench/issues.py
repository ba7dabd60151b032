"""Write-path, event-loop, relay and live-stream benchmarks (issues 3-6).

    python -m bench.issues [--part orders --part logins --part relay --part sse]
                           [--duration 10] [--warmup 3] [--subscribers 1000 --subscribers 5000]

Same database (`var/bench`, 10,000 products, demo users seeded) and the same servers as
`bench.run`, but Shelfwise runs with `SHELFWISE_RATE_LIMIT_ENABLED=false`: every request
here comes from 127.0.0.1 with one customer's or one staff member's token, so the per-IP
and per-user limits (20 logins/minute, 120 live connects/minute, 1200 requests/minute)
would answer 429 at once — they are not what is being measured. Parts:

- orders: `POST /v1/orders` (one line, quantity 1, a random product of 10,000, or of 10
  "hot" ones) with wrk + bench/orders.lua, 64 connections, against Shelfwise and the
  baseline's raw three-statement transaction; then oversell check + `shelfwise reconcile`.
- logins: fixed-rate `GET /v1/products/{id}` (open loop) alone, then beside 20 logins/s.
- relay: `shelfwise worker` running; orders at full speed; outbox lag sampled every 100 ms
  and published_at - created_at of every event created during the run.
- sse: N `GET /v1/stream?channels=stock` subscribers (staff token) while stock receipts
  are posted at 20/s with the worker relaying; delivery lag and server RSS. With
  `--live-instances K` (issue 10) the subscribers go to K `serve --role live` processes
  and the receipts to a `serve --role api` one: do the writes still meet their latency?

Results go to bench/results/<timestamp>-issues.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

from bench.run import machine_busy_seconds, wait_for_quiet
from bench.servers import (
    BIN,
    DATABASE,
    ROOT,
    Server,
    baseline_server,
    cluster_cpu_seconds,
    free_port,
    prepare_seeded,
    shelfwise_server,
)

RESULTS = ROOT / "bench" / "results"
CUSTOMER = ("customer@shelfwise.local", "customer-demo-password")
STAFF = ("staff@shelfwise.local", "staff-demo-password")
# wrk drops its connections when a run ends; the server still finishes what was in flight
# (up to 64 requests, holding pool connections), which must not spill into the next step.
DRAIN_S = 6.0


def login(port: int, who: tuple[str, str]) -> str:
    body = json.dumps({"email": who[0], "password": who[1]}).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/auth/login",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


def raw(method: str, path: str, port: int, headers: dict[str, str], body: str = "") -> str:
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body.encode())}"]
    return "\r\n".join(head) + "\r\n\r\n" + body


class Load:
    """CPU accounting around one measured step: server, PostgreSQL, everything else."""

    def __init__(self, server: Server | None) -> None:
        self.server = server

    def __enter__(self) -> Load:
        self.t = time.monotonic()
        self.busy = machine_busy_seconds()
        self.db = cluster_cpu_seconds()
        self.cpu = self.server.cpu_seconds() if self.server else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self.t
        cpu = (self.server.cpu_seconds() if self.server else 0.0) - self.cpu
        db = cluster_cpu_seconds() - self.db
        busy = machine_busy_seconds() - self.busy
        self.figures = {
            "server_cpu_pct": round(100 * cpu / wall),
            "db_cpu_pct": round(100 * db / wall),
            "rest_cpu_pct": round(100 * (busy - cpu - db) / wall),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        # Unrounded, for CPU per request (a percentage rounds away up to 0.5 % of the wall).
        self.seconds = {"wall": wall, "server_cpu": cpu, "db_cpu": db}


def wrk_orders(port: int, token: str, bodies: Path, seconds: float, conns: int) -> dict[str, Any]:
    argv = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout=5s",
        "-s",
        str(ROOT / "bench" / "orders.lua"),
        f"http://127.0.0.1:{port}",
    ]
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_TOKEN": token}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 30)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    r = json.loads(line.removeprefix("BENCH_JSON "))
    dur = r["duration_us"] / 1e6
    return {
        "requests": r["requests"],
        "rps": round(r["requests"] / dur, 1),
        "created_per_s": round(r["s201"] / dur, 1),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "201": r["s201"],
        "409": r["s409"],
        "5xx": r["s5xx"],
        "other": r["sother"],
        "socket_errors": r["connect"] + r["read"] + r["write"] + r["timeout"],
    }


def rate_client(
    mode: str, port: int, requests: list[str], tmp: Path, **opts: Any
) -> subprocess.Popen[str]:
    path = tmp / f"{mode}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(requests))
    argv = [
        str(BIN / "python"),
        "-m",
        "bench.rate",
        mode,
        "--port",
        str(port),
        "--requests",
        str(path),
    ]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def collect(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def integrity(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        oversold = conn.execute(
            "SELECT count(*) FROM stock_levels WHERE reserved > on_hand OR reserved < 0"
        ).fetchone()[0]
    done = subprocess.run(
        [str(BIN / "shelfwise"), "reconcile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": url},
        timeout=120,
    )
    return {
        "oversold_levels": oversold,
        "reconcile_exit": done.returncode,
        "reconcile_tail": (done.stdout + done.stderr).strip().splitlines()[-3:],
    }


def undo_baseline(url: str, snapshot: bool) -> None:
    """The baseline reserves stock without order lines or ledger rows: put `reserved` back
    and drop its orders and events afterwards, so reconcile judges Shelfwise's rows only."""
    with psycopg.connect(url, autocommit=True) as conn:
        if snapshot:
            conn.execute("DROP TABLE IF EXISTS bench_reserved")
            conn.execute("CREATE TABLE bench_reserved AS SELECT id, reserved FROM stock_levels")
            return
        conn.execute(
            "UPDATE stock_levels s SET reserved = b.reserved FROM bench_reserved b"
            " WHERE b.id = s.id AND s.reserved <> b.reserved"
        )
        conn.execute("DELETE FROM outbox_events WHERE type = 'bench.order_placed'")
        conn.execute(
            "DELETE FROM orders o WHERE NOT EXISTS"
            " (SELECT 1 FROM order_lines l WHERE l.order_id = o.id)"
        )
        conn.execute("DROP TABLE bench_reserved")


def start_worker(url: str, log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    return subprocess.Popen(
        [str(BIN / "shelfwise"), "worker", "--metrics-port", str(free_port())],
        cwd=ROOT,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={
            **os.environ,
            "DATABASE_URL": url,
            "SHELFWISE_ENV": "development",
            "SHELFWISE_LOG_JSON": "true",
        },
    )


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def part_orders(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with psycopg.connect(ctx["url"]) as conn:
        # The hot set: the 10 products with most free stock at the location right now, so
        # both servers start from the same full shelves (the baseline's run is undone).
        hot = [
            str(r[0])
            for r in conn.execute(
                "SELECT product_id FROM stock_levels WHERE location_id = %s"
                " ORDER BY on_hand - reserved DESC LIMIT 10",
                (ctx["location"],),
            )
        ]
        free = conn.execute(
            "SELECT sum(on_hand - reserved) FROM stock_levels"
            " WHERE location_id = %s AND product_id = ANY(%s::uuid[])",
            (ctx["location"], hot),
        ).fetchone()[0]
        if ctx["part"] == "hot":
            # Seeded shelves hold 20-199 units: the warm-up alone would sell them out and
            # the run would measure only 409s. Receive 100,000 more of each hot product,
            # ledger row and level together (as seeding does), so reconcile stays exact.
            conn.execute(
                "INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind,"
                " on_hand_delta, reason) SELECT id, product_id, location_id, 'receipt',"
                " 100000, 'bench restock' FROM stock_levels"
                " WHERE location_id = %s AND product_id = ANY(%s::uuid[])",
                (ctx["location"], hot),
            )
            conn.execute(
                "UPDATE stock_levels SET on_hand = on_hand + 100000"
                " WHERE location_id = %s AND product_id = ANY(%s::uuid[])",
                (ctx["location"], hot),
            )
            conn.commit()
            free += 1_000_000
    out["hot10_free_units_at_start"] = int(free)
    scenarios = {
        "orders": (("orders_uniform", ctx["ids"]), ("orders_hot10", hot)),
        "hot": (("orders_hot10", hot),),
    }[ctx["part"]]
    for name, products in scenarios:
        bodies = ctx["tmp"] / f"{name}.bodies"
        bodies.write_text(
            "".join(
                json.dumps(
                    {"lines": [{"product_id": p, "quantity": 1}], "location_id": ctx["location"]},
                    separators=(",", ":"),
                )
                + "\n"
                for p in products
            )
        )
        for target in ("baseline", "shelfwise"):  # baseline first: it leaves the stock as it was
            server = ctx["servers"][target]
            quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait else None
            if target == "baseline":
                undo_baseline(ctx["url"], snapshot=True)
            wrk_orders(server.port, ctx["token"], bodies, args.warmup, 64)
            time.sleep(DRAIN_S)  # requests wrk abandoned at the end of the warm-up finish
            with Load(server) as load:
                result = wrk_orders(server.port, ctx["token"], bodies, args.duration, 64)
            result.update(load.figures, quiet=quiet)
            time.sleep(DRAIN_S)  # let in-flight requests commit before checking or undoing
            if target == "baseline":
                undo_baseline(ctx["url"], snapshot=False)
            else:
                result["integrity"] = integrity(ctx["url"])
            out[f"{name}/{target}"] = result
            print(f"  {name:<15}{target:<10} {json.dumps(result)}", flush=True)
    return out


def part_logins(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    port = ctx["servers"]["shelfwise"].port
    gets = [raw("GET", f"/v1/products/{p}", port, {}) for p in ctx["ids"]]
    body = json.dumps({"email": CUSTOMER[0], "password": CUSTOMER[1]})
    logins = [raw("POST", "/v1/auth/login", port, {}, body)]
    out: dict[str, Any] = {}
    for label, with_logins in (
        ("get_alone", False),
        ("get_with_20_logins_per_s", True),
        ("get_alone_again", False),
    ):
        quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait else None
        warm = rate_client(
            "fixed", port, gets, ctx["tmp"], rate=args.get_rate, duration=args.warmup
        )
        collect(warm)
        with Load(ctx["servers"]["shelfwise"]) as load:
            lp = (
                rate_client("fixed", port, logins, ctx["tmp"], rate=20, duration=args.duration + 1)
                if with_logins
                else None
            )
            if lp:
                time.sleep(0.5)
            gp = rate_client(
                "fixed", port, gets, ctx["tmp"], rate=args.get_rate, duration=args.duration
            )
            result = {"get": collect(gp)}
            if lp:
                result["login"] = collect(lp)
        result.update(load.figures, quiet=quiet)
        out[label] = result
        print(f"  {label:<26} {json.dumps(result)}", flush=True)
    return out


def sample_lag(url: str, stop_evt: threading.Event, samples: list[float]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop_evt.wait(0.1):
            lag = conn.execute(
                "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)"
                " FROM outbox_events WHERE position IS NULL"
            ).fetchone()[0]
            samples.append(float(lag))


def part_relay(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    server = ctx["servers"]["shelfwise"]
    bodies = ctx["tmp"] / "relay.bodies"
    bodies.write_text(
        "".join(
            json.dumps(
                {"lines": [{"product_id": p, "quantity": 1}], "location_id": ctx["location"]},
                separators=(",", ":"),
            )
            + "\n"
            for p in ctx["ids"]
        )
    )
    worker = start_worker(ctx["url"], RESULTS / f"{ctx['stamp']}-worker-relay.log")
    try:
        time.sleep(3)
        quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait else None
        wrk_orders(server.port, ctx["token"], bodies, args.warmup, 64)
        time.sleep(DRAIN_S)
        with psycopg.connect(ctx["url"]) as conn:
            t0 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        samples: list[float] = []
        stop_evt = threading.Event()
        sampler = threading.Thread(target=sample_lag, args=(ctx["url"], stop_evt, samples))
        sampler.start()
        with Load(server) as load:
            orders = wrk_orders(server.port, ctx["token"], bodies, args.duration, 64)
        with psycopg.connect(ctx["url"]) as conn:
            t1 = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(2)
        stop_evt.set()
        sampler.join()
        with psycopg.connect(ctx["url"]) as conn:
            rows = conn.execute(
                "SELECT extract(epoch FROM published_at - created_at) FROM outbox_events"
                " WHERE created_at BETWEEN %s AND %s",
                (t0, t1),
            ).fetchall()
            published = conn.execute(
                "SELECT count(*) FROM outbox_events WHERE published_at BETWEEN %s AND %s", (t0, t1)
            ).fetchone()[0]
            unpublished = conn.execute(
                "SELECT count(*) FROM outbox_events WHERE position IS NULL"
            ).fetchone()[0]
        lags = sorted(float(r[0]) for r in rows if r[0] is not None)
        from bench.loadgen import percentile

        window = (t1 - t0).total_seconds()
        result = {
            "orders": orders,
            **load.figures,
            "quiet": quiet,
            "events_created": len(rows),
            "events_published_per_s": round(published / window, 1),
            "unpublished_after_2s": unpublished,
            "published_minus_created_ms": {
                "p50": round(percentile(lags, 0.5) * 1000, 1),
                "p99": round(percentile(lags, 0.99) * 1000, 1),
                "max": round((lags[-1] if lags else 0) * 1000, 1),
            },
            "sampled_oldest_unpublished_ms": {
                "samples": len(samples),
                "p50": round(statistics.median(samples) * 1000, 1) if samples else None,
                "p99": round(percentile(sorted(samples), 0.99) * 1000, 1),
                "max": round(max(samples, default=0) * 1000, 1),
            },
            "integrity": integrity(ctx["url"]),
        }
        print(f"  relay {json.dumps(result)}", flush=True)
        return result
    finally:
        stop(worker)


def tcp_counters() -> dict[str, int]:
    """The kernel's listen-queue overflows and SYN retransmissions so far (whole machine):
    a server too slow to accept drops SYNs, and each costs its client a retransmission."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    wanted = ("ListenOverflows", "TCPSynRetrans")
    out: dict[str, int] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        for name, value in zip(names.split()[1:], values.split()[1:], strict=False):
            if name in wanted:
                out[name] = int(value)
    return out


def relayed(url: str, timeout_s: float = 300.0) -> int:
    """Wait until the worker has published every event; returns how many were waiting."""
    query = "SELECT count(*) FROM outbox_events WHERE position IS NULL"
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        waiting = first = int(conn.execute(query).fetchone()[0])
        while waiting and time.monotonic() < deadline:
            time.sleep(0.5)
            waiting = int(conn.execute(query).fetchone()[0])
    if waiting:
        raise RuntimeError(f"{waiting} events still unpublished after {timeout_s:.0f}s")
    return first


def sse_server(ctx: dict[str, Any], args: argparse.Namespace) -> Server:
    """A fresh `shelfwise serve` for one size; with `--limit-concurrency`, with that
    connection cap (`server_limit_concurrency`, 10,000 by default) instead."""
    server = ctx["restart"]()
    if not args.limit_concurrency and not args.live_instances:
        return server
    server.stop()
    env = dict(server.env)
    if args.limit_concurrency:
        env["SHELFWISE_SERVER_LIMIT_CONCURRENCY"] = str(args.limit_concurrency)
    if args.live_instances:  # the writes' instance: everything but the live endpoints
        env["SHELFWISE_SERVER_ROLE"] = "api"
    server = Server(
        name="shelfwise", argv=server.argv, env=env, port=server.port, log_path=server.log_path
    )
    ctx["servers"]["shelfwise"] = server  # stopped by main() like the others
    server.start()
    server.wait_ready()
    return server


def live_servers(ctx: dict[str, Any], args: argparse.Namespace, api: Server) -> list[Server]:
    """`--live-instances K`: K `shelfwise serve --role live` beside the API instance, on the
    same database; the subscribers connect to these, the adjustments go to the API one."""
    servers = []
    for n in range(args.live_instances):
        env = {**api.env, "SHELFWISE_SERVER_ROLE": "live", "SHELFWISE_INSTANCE_ID": f"live-{n}"}
        if args.limit_concurrency:
            env["SHELFWISE_SERVER_LIMIT_CONCURRENCY"] = str(args.limit_concurrency)
        port = free_port()
        argv = [*api.argv[: api.argv.index("--port")], "--port", str(port)]
        log_path = RESULTS / f"{ctx['stamp']}-issues-live-{n}-{time.time_ns()}.log"
        if args.profile_live:  # the same serve, sampled (bench/profiled.py)
            profile = log_path.with_suffix(".profile.txt")
            argv = [str(BIN / "python"), "-m", "bench.profiled", str(profile), *argv[1:]]
        server = Server(name=f"live-{n}", argv=argv, env=env, port=port, log_path=log_path)
        ctx["servers"][server.name] = server  # stopped by main() like the others
        server.start()
        servers.append(server)
    for server in servers:
        server.wait_ready()
    return servers


def profiling(lives: list[Server], args: argparse.Namespace) -> None:
    """`--profile-live`: open or close the live processes' profiling window."""
    for server in lives if args.profile_live else []:
        if server.process is not None:
            server.process.send_signal(signal.SIGUSR1)


def live_metrics(port: int, transport: str) -> dict[str, Any]:
    """From the server's /metrics: its own view of the fan-out lag (one observation per
    write, its oldest event; whole run, ramp included) and how often the GC ran."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            text = resp.read().decode()
    except OSError as exc:  # a saturated server may not answer in time: that is a finding
        return {"error": f"/metrics: {type(exc).__name__} {exc}"}
    buckets: list[tuple[float, float]] = []
    gc: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith("shelfwise_live_fanout_latency_seconds_bucket") and (
            f'transport="{transport}"' in name
        ):
            le = name.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(value)))
        elif name.startswith("python_gc_collections_total"):
            gc[name.split('generation="')[1].split('"')[0]] = float(value)
    total = buckets[-1][1] if buckets else 0.0

    def upper(q: float) -> float | None:
        return next((le for le, n in buckets if total and n >= q * total), None)

    return {
        "writes": total,
        "write_lag_p50_le_s": upper(0.5),
        "write_lag_p99_le_s": upper(0.99),
        "gc_collections": gc,
    }


def with_host(request: str, port: int) -> str:
    return request.replace(request.split("Host: ")[1].split("\r\n")[0], f"127.0.0.1:{port}")


def part_sse(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = ctx["servers"]["shelfwise"].port
    staff = login(port, STAFF)
    auth = {"Authorization": f"Bearer {staff}"}
    requests = {
        "sse": raw(
            "GET", "/v1/stream?channels=stock", port, {**auth, "Accept": "text/event-stream"}
        ),
        "ws": raw(
            "GET",
            "/v1/ws",
            port,
            {
                **auth,
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        ),
    }
    adjust = [
        raw(
            "POST",
            "/v1/stock/adjustments",
            port,
            auth,
            json.dumps(
                {
                    "product_id": p,
                    "location_id": ctx["location"],
                    "kind": "receipt",
                    "quantity": 1,
                    "reason": "bench",
                }
            ),
        )
        for p in ctx["ids"][:2000]
    ]
    worker = start_worker(ctx["url"], RESULTS / f"{ctx['stamp']}-worker-sse.log")
    try:
        time.sleep(3)
        for mode in args.transport or ["sse"]:
            for n in args.subscribers:
                # Other runs on this database (orders benchmarks without a worker) leave
                # events unpublished: relayed during the ramp, they would reach every
                # stream as one burst of minutes-old events, measured as lag.
                backlog = relayed(ctx["url"])
                # A fresh server per size: RSS and connection state of the previous size gone.
                server = sse_server(ctx, args)
                port = server.port
                lives = live_servers(ctx, args, server)
                live_ports = [s.port for s in lives] or [port]
                adjust = [with_host(a, port) for a in adjust]
                quiet = wait_for_quiet(args.quiet_wait) if args.quiet_wait else None
                tcp_before = tcp_counters()
                procs = max(1, n // 2500, len(live_ports))
                ramp = 500.0
                go_file = ctx["tmp"] / f"go-{mode}-{n}"
                ready = [ctx["tmp"] / f"ready-{mode}-{n}-{i}" for i in range(procs)]
                with Load(server) as load:
                    subs = [
                        rate_client(
                            mode,
                            live_ports[i % len(live_ports)],
                            [with_host(requests[mode], live_ports[i % len(live_ports)])],
                            ctx["tmp"],
                            subscribers=n // procs,
                            duration=args.duration,
                            ramp=ramp / procs,
                            settle=args.settle,
                            ready_file=ready[i],
                            go_file=go_file,
                        )
                        for i in range(procs)
                    ]
                    # Connects may be slower than `ramp`: adjust until every subscriber
                    # process has finished measuring, whenever that is (the stop file;
                    # the duration only bounds a harness that died).
                    stop_file = ctx["tmp"] / f"stop-{mode}-{n}"
                    limit = n / ramp * 6 + args.settle + 2.0 + args.duration
                    adj = rate_client(
                        "fixed",
                        port,
                        adjust,
                        ctx["tmp"],
                        rate=20,
                        duration=limit + 60 + args.duration + 120,
                        stop_file=stop_file,
                    )
                    # Every subscriber process measures the same window, once all are open.
                    give_up = time.monotonic() + limit + 60
                    while not all(r.exists() for r in ready) and time.monotonic() < give_up:
                        time.sleep(0.1)
                    clients = [psutil.Process(p.pid) for p in subs]
                    before = [sum(c.cpu_times()[:2]) for c in clients]
                    live_before = [s.cpu_seconds() for s in lives]
                    with Load(server) as measured:
                        go_file.touch()
                        profiling(lives, args)
                        time.sleep(args.duration)
                        profiling(lives, args)
                    live_cpu = [
                        round(100 * (s.cpu_seconds() - cpu) / args.duration)
                        for s, cpu in zip(lives, live_before, strict=True)
                    ]
                    client_cpu = [
                        round(100 * (sum(c.cpu_times()[:2]) - cpu) / args.duration)
                        for c, cpu in zip(clients, before, strict=True)
                    ]
                    parts = [collect(p, timeout=limit + 120) for p in subs]
                    stop_file.touch()
                    adj_result = collect(adj, timeout=30)
                    server_view = live_metrics(port, mode)
                    live_views = [live_metrics(p, mode) for p in live_ports if p != port]
                    live_usage = {
                        s.name: {
                            "rss_idle_mb": round(s.usage.idle_rss / 1e6, 1),
                            "rss_peak_mb": round(s.usage.peak_rss / 1e6, 1),
                        }
                        for s in lives
                    }
                for s in lives:
                    s.stop()
                    ctx["servers"].pop(s.name, None)
                result = {
                    "transport": mode,
                    "subscribers": n,
                    "limit_concurrency": args.limit_concurrency or 10_000,
                    "live_instances": len(lives),
                    "live_servers": live_views,
                    "live_usage": live_usage,
                    "open": sum(p["open"] for p in parts),
                    "open_at_end": sum(p["open_at_end"] for p in parts),
                    "settle_s": max(p["settle_s"] for p in parts),
                    "statuses": [p["statuses"] for p in parts],
                    "lost": sum(p["lost_total"] for p in parts),
                    "lost_while_measuring": sum(p["lost_during_run"] for p in parts),
                    "connect_errors": sum(p["connect_errors"] for p in parts),
                    # every stream's events in order, none twice, none skipped (bench/rate.py)
                    "out_of_order": sum(p.get("out_of_order", 0) for p in parts),
                    "missing": sum(p.get("missing", 0) for p in parts),
                    "events_received_per_s": round(sum(p["events_per_s"] for p in parts), 1),
                    "lag_p50_ms_worst_process": max(p["p50_ms"] for p in parts),
                    "lag_p99_ms_worst_process": max(p["p99_ms"] for p in parts),
                    "lag_max_ms": max(p["max_ms"] for p in parts),
                    "per_process": parts,
                    "adjustments": adj_result,
                    "server": server_view,
                    "server_rss_mb": {
                        "idle": round(server.usage.idle_rss / 1e6, 1),
                        "peak": round(server.usage.peak_rss / 1e6, 1),
                    },
                    **load.figures,
                    "while_measuring": {
                        **measured.figures,
                        "client_cpu_pct": client_cpu,
                        "live_cpu_pct": live_cpu,  # inside rest_cpu_pct
                    },
                    "quiet": quiet,
                    "unpublished_at_start": backlog,
                    "tcp_during_run": {
                        k: v - tcp_before.get(k, 0) for k, v in tcp_counters().items()
                    },
                }
                out[f"{mode}_{n}"] = result
                brief = {k: v for k, v in result.items() if k != "per_process"}
                print(f"  {mode} {n}: {json.dumps(brief)}", flush=True)
    finally:
        stop(worker)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--part",
        action="append",
        choices=("orders", "hot", "logins", "relay", "sse"),
        help="hot: only the hot-product half of orders",
    )
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--quiet-wait", type=float, default=15.0)
    parser.add_argument(
        "--get-rate",
        type=float,
        default=100.0,
        help="fixed GET rate of the logins part (open loop)",
    )
    parser.add_argument("--subscribers", type=int, action="append")
    parser.add_argument(
        "--transport",
        action="append",
        choices=("sse", "ws"),
        help="sse part: Server-Sent Events (default) and/or WebSocket subscribers",
    )
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=0,
        help="sse part: the server's connection cap (server_limit_concurrency; default 10,000)",
    )
    parser.add_argument(
        "--live-instances",
        type=int,
        default=0,
        help="sse part: subscribers on K `serve --role live` processes, writes on `--role api`",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="sse part: seconds the subscribers wait, after the ramp, for the last streams",
    )
    parser.add_argument(
        "--database",
        default=DATABASE,
        help="the database in var/bench (e.g. shelfwise_bench_live for the sse part: other "
        "benchmarks' orders expire into the shared one as bursts of thousands of events)",
    )
    parser.add_argument(
        "--profile-live",
        action="store_true",
        help="sse part: sample the live processes' stacks while measuring (bench/profiled.py); "
        "the profile is written beside each live log when it stops",
    )
    args = parser.parse_args()
    # `timeout N python -m bench.issues ...` sends SIGTERM: stop the servers (finally
    # below) instead of leaving them running with thousands of streams open.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args.subscribers = args.subscribers or [1000]
    parts = args.part or ["orders", "logins", "relay", "sse"]
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers
    print("preparing var/bench ...", flush=True)
    url, ids, location = prepare_seeded(10_000, args.database)
    env = {"SHELFWISE_RATE_LIMIT_ENABLED": "false"}
    servers: dict[str, Server] = {
        "shelfwise": shelfwise_server(
            url,
            free_port(),
            RESULTS / f"{stamp}-issues-shelfwise.log",
            log_json=True,
            extra_env=env,
        ),
        "baseline": baseline_server(url, free_port(), RESULTS / f"{stamp}-issues-baseline.log"),
    }

    def restart() -> Server:
        servers["shelfwise"].stop()
        servers["shelfwise"] = shelfwise_server(
            url,
            free_port(),
            RESULTS / f"{stamp}-issues-shelfwise-{time.time_ns()}.log",
            log_json=True,
            extra_env=env,
        )
        servers["shelfwise"].start()
        servers["shelfwise"].wait_ready()
        return servers["shelfwise"]

    results: dict[str, Any] = {
        "stamp": stamp,
        "args": vars(args),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
    }
    try:
        for s in servers.values():
            s.start()
        for s in servers.values():
            s.wait_ready()
        token = login(servers["shelfwise"].port, CUSTOMER)
        with tempfile.TemporaryDirectory(prefix="shelfwise-issues-") as tmp:
            ctx = {
                "url": url,
                "ids": ids,
                "location": location,
                "servers": servers,
                "token": token,
                "tmp": Path(tmp),
                "stamp": stamp,
                "restart": restart,
            }
            for part in parts:
                print(f"== {part}", flush=True)
                ctx["part"] = part
                fn = {
                    "orders": part_orders,
                    "hot": part_orders,
                    "logins": part_logins,
                    "relay": part_relay,
                    "sse": part_sse,
                }[part]
                results[part] = fn(ctx, args)
                ctx["token"] = login(servers["shelfwise"].port, CUSTOMER)  # 10-minute tokens
    finally:
        for s in servers.values():
            s.stop()
        results["loadavg_end"] = os.getloadavg()
        out = RESULTS / f"{stamp}-issues.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
