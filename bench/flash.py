"""Flash sale: 2,000 buyers from 20 accounts at once, for 100 units of one product.

    python -m bench.flash [--buyers 2000] [--accounts 20] [--units 100]

One `shelfwise serve` (one worker, rate limiting and in-flight caps ON, as deployed) on a
database of its own in the bench cluster (`var/bench`, database `shelfwise_flash`,
dropped and migrated afresh each run, so `shelfwise reconcile` judges this run only).
One product at one location with `--units` received; `--accounts` customer accounts
(tokens minted with the development key, so no login limit is spent). A client in its
own process opens one connection per buyer, then every buyer sends its one-line order
(`location_id` set, fresh `Idempotency-Key`) at the same moment; latency is from that
moment to the answer. Then the same burst of connections sends `GET /healthz` (no
auth, no database): the control, what the server spends per buyer before any order work.

Target (issue 14): never oversold, every buyer answered 201 or 409 within 2 s, no 429 and
no 503; exactly `--units` x 201. Checked afterwards in the database: the level's
counters, the orders placed for the product, no level oversold, `shelfwise reconcile`.
Runs about 1-1.5 min (most of it creating the database and starting the server).

Results: bench/results/<stamp>-flash.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.issues import Load, integrity
from bench.loadgen import _read_response, percentile
from bench.servers import BIN, DATA_DIR, ROOT, Server, free_port, seed_demo, shelfwise_server

RESULTS = ROOT / "bench" / "results"
DATABASE = "shelfwise_flash"
TARGET_S = 2.0


# -- the buyers (a subprocess with its own event loop) ------------------------------------


async def _buyers(port: int, body: bytes, tokens: list[str], buyers: int) -> dict[str, Any]:
    """Connect every buyer first, then send every order at once; time each answer.
    With an empty body, each sends `GET /healthz` instead (the control burst)."""
    opened = asyncio.Semaphore(256)  # connect in waves: not 2,000 SYNs in one burst

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with opened:
            return await asyncio.open_connection("127.0.0.1", port)

    connections = await asyncio.gather(*(connect() for _ in range(buyers)))
    go = asyncio.Event()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    started = 0.0

    async def buy(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (
            (
                f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {tokens[n % len(tokens)]}\r\n"
                f"Idempotency-Key: flash-{n}-{secrets.token_hex(8)}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            + body
            if body
            else b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        await go.wait()
        try:
            writer.write(request)
            status, _ = await asyncio.wait_for(_read_response(reader), timeout=30)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(buy(n, r, w)) for n, (r, w) in enumerate(connections)]
    await asyncio.sleep(0.2)  # every task is parked on `go` (bounded; nothing to poll)
    started = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    lat = sorted(latencies)
    return {
        "buyers": buyers,
        "answered": len(lat),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "transport_errors": errors,
        "p50_ms": round(percentile(lat, 0.5) * 1000, 1),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
        "max_ms": round(lat[-1] * 1000, 1) if lat else None,
        "over_2s": sum(1 for x in lat if x > TARGET_S),
    }


def client_main(argv: list[str]) -> None:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", default="")
    parser.add_argument("--buyers", type=int, required=True)
    args = parser.parse_args(argv)
    tokens = os.environ["BENCH_TOKENS"].split(",")
    print(json.dumps(uvloop.run(_buyers(args.port, args.body.encode(), tokens, args.buyers))))


# -- setting the sale up -------------------------------------------------------------------


def fresh_database() -> str:
    """`shelfwise_flash` in the bench cluster, dropped, re-created, migrated and seeded."""
    from psycopg.conninfo import make_conninfo

    from shelfwise.embedded import start_embedded
    from shelfwise.migrate import upgrade

    url = start_embedded(DATA_DIR, database=DATABASE)
    admin = make_conninfo(url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    url = start_embedded(DATA_DIR, database=DATABASE)  # creates it again
    upgrade(url)
    seed_demo(url)
    return url


def _tokens(url: str, accounts: int) -> tuple[list[str], str]:
    """Tokens for `accounts` new customers and for the seeded staff user."""
    import asyncio as aio

    from shelfwise.config import load_settings
    from shelfwise.db import open_database
    from shelfwise.identity import service as identity
    from shelfwise.identity.models import Role
    from shelfwise.identity.passwords import PasswordHasher
    from shelfwise.identity.tokens import TokenIssuer

    settings = load_settings(database_url=url)
    issuer = TokenIssuer(
        keys={settings.jwt_key_id: settings.jwt_secret.get_secret_value().encode()},
        signing_kid=settings.jwt_key_id,
        issuer=settings.jwt_issuer,
        ttl=timedelta(minutes=30),
    )
    emails = [f"flash-buyer-{i:02d}@bench.local" for i in range(accounts)]

    async def create_missing() -> None:
        db = open_database(settings, url)
        hasher = PasswordHasher(memory_kib=8, time_cost=1, parallelism=1)  # never logged in
        try:
            for email in emails:
                async with db.sessions() as session:
                    await identity.create_user(
                        session, hasher, email=email, password=secrets.token_urlsafe(24)
                    )
        finally:
            hasher.close()
            await db.dispose()

    aio.run(create_missing())
    now = datetime.now(UTC)
    with psycopg.connect(url) as conn:
        users = dict(
            conn.execute(
                "SELECT email, id FROM users WHERE email = ANY(%s) OR email = %s",
                (emails, "staff@shelfwise.local"),
            ).fetchall()
        )
    customers = [issuer.issue(user_id=users[e], role=Role.CUSTOMER, now=now)[0] for e in emails]
    staff = issuer.issue(user_id=users["staff@shelfwise.local"], role=Role.STAFF, now=now)[0]
    return customers, staff


def _post(port: int, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token}",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.load(response))


def _gate_counters(port: int) -> dict[str, float]:
    """Who answered: the gate (`sold_out`), the database (`insufficient_stock`), and the
    placements admitted; with the driver pool's timeouts (503s) and the in-flight cap."""
    wanted = {
        'shelfwise_admission_total{outcome="admitted"}': "gate_admitted",
        'shelfwise_admission_total{outcome="sold_out"}': "gate_sold_out",
        'shelfwise_admission_total{outcome="stored_key"}': "gate_stored_key",
        'shelfwise_orders_total{outcome="insufficient_stock"}': "database_refusals",
        'shelfwise_orders_total{outcome="reserved"}': "reserved",
        'shelfwise_rate_limited_total{policy="concurrency"}': "in_flight_cap_429",
    }
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    found: dict[str, float] = dict.fromkeys([*wanted.values(), "pool_timeouts"], 0.0)
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample in wanted:
            found[wanted[sample]] = float(value)
        elif sample.startswith("shelfwise_db_pool_timeouts_total"):
            found["pool_timeouts"] += float(value)
    return found


def _level(url: str, product: str, location: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        on_hand, reserved = conn.execute(
            "SELECT on_hand, reserved FROM stock_levels WHERE product_id = %s AND location_id = %s",
            (product, location),
        ).fetchone() or (None, None)
        orders = conn.execute(
            "SELECT count(DISTINCT order_id), coalesce(sum(quantity), 0) FROM order_lines"
            " WHERE product_id = %s",
            (product,),
        ).fetchone()
    assert orders is not None
    return {"on_hand": on_hand, "reserved": reserved, "orders": orders[0], "units": orders[1]}


def burst(server: Server, body: str, tokens: list[str], buyers: int) -> dict[str, Any]:
    """One burst of `buyers` connections from the client process; the server's CPU for it
    (connecting, serving and closing every buyer's connection)."""
    argv = [str(BIN / "python"), "-m", "bench.flash", "client", "--port", str(server.port)]
    argv += ["--body", body, "--buyers", str(buyers)]
    cpu_before = server.cpu_seconds()
    with Load(server) as load:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env={**os.environ, "BENCH_TOKENS": ",".join(tokens)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    if done.returncode != 0:
        raise RuntimeError(f"client failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = server.cpu_seconds() - cpu_before
    result["server_cpu_s"] = round(cpu, 2)
    result["server_cpu_us_per_buyer"] = round(cpu / buyers * 1e6)
    return {**result, **load.figures}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        client_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--buyers", type=int, default=2000)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--units", type=int, default=100)
    args = parser.parse_args()
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    url = fresh_database()
    tokens, staff = _tokens(url, args.accounts)
    server = shelfwise_server(url, free_port(), RESULTS / f"{stamp}-flash.log", log_json=True)
    results: dict[str, Any] = {"stamp": stamp, "args": vars(args), "cpus": os.cpu_count()}
    results["loadavg_start"] = os.getloadavg()
    try:
        server.start()
        server.wait_ready()
        tag = uuid.uuid4().hex[:8]
        product = _post(
            server.port,
            "/v1/products",
            staff,
            {
                "sku": f"FLASH-{tag}",
                "name": "Flash sale item",
                "category": "flash",
                "price_minor": 999,
                "currency": "EUR",
            },
        )["id"]
        location = _post(
            server.port, "/v1/locations", staff, {"code": f"FL-{tag}", "name": "Flash sale"}
        )["id"]
        _post(
            server.port,
            "/v1/stock/adjustments",
            staff,
            {
                "product_id": product,
                "location_id": location,
                "kind": "receipt",
                "quantity": args.units,
                "reason": "flash sale stock",
            },
        )
        body = json.dumps(
            {"lines": [{"product_id": product, "quantity": 1}], "location_id": location},
            separators=(",", ":"),
        )
        results["sale"] = sale = burst(server, body, tokens, args.buyers)
        results["counters"] = _gate_counters(server.port)
        # The same burst of connections to `GET /healthz`: the stack's floor per buyer.
        results["control_healthz"] = burst(server, "", tokens, args.buyers)
        results["level"] = _level(url, product, location)
        results["integrity"] = integrity(url)
        statuses = sale["statuses"]
        results["target_met"] = (
            statuses.get("201", 0) == args.units
            and statuses.get("409", 0) == args.buyers - args.units
            and sale["answered"] == args.buyers
            and sale["over_2s"] == 0
            and results["level"]["reserved"] == args.units
            and results["integrity"]["oversold_levels"] == 0
        )
    finally:
        server.stop()
        results["loadavg_end"] = os.getloadavg()
        out = RESULTS / f"{stamp}-flash.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(json.dumps(results, indent=2, default=str))
        print(f"results: {out.relative_to(ROOT)}")
    return 0 if results.get("target_met") else 1


if __name__ == "__main__":
    sys.exit(main())
