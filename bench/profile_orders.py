"""Where a `POST /v1/orders` spends its CPU: the whole app, driven in-process.

    python -m bench.profile_orders [--requests 3000] [--concurrency 16] [--html out.html]

Starts the bench database (`var/bench`, as `bench.stack`), builds Shelfwise's app with the
bench's settings (access log on, JSON logs, rate limiting off) and calls the ASGI app
directly — no socket, no HTTP parser — with `--concurrency` requests in flight, each a
one-line order of a random product with a fresh `Idempotency-Key`. It prints the
process's CPU per order (the app, psycopg and the loop; PostgreSQL is another process)
and where it went, by package and by stage, from `cProfile` (or a pyinstrument page with
`--html`). Runs ~20-40 s. The access log (stderr) goes to a temporary file.

`--stack-only` measures the stack around the use case: after the warm-up, the use case
(`orders.service.place_order`) answers the outcome of a real placement again instead of
running, so the figure is the HTTP stack, authentication, validation, the idempotency
fingerprint and admission, without the database's noise (~250-300 us/order).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import random
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from typing import Any

from bench.servers import prepare_database

# The location that stocks every product (the seed's), as the bench's order bodies use.
SHELF = "SELECT location_id AS id FROM stock_levels GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
STAGES = {
    # function name fragments -> the stage a reader knows them by (cumulative time)
    "get_principal": "auth: credential, JWT, principal look-up, rate limit",
    "place_order (shelfwise/orders/service.py)": "use case: idempotency + placement + commit",
    "fingerprint": "idempotency fingerprint",
    "request_body_to_args": "body validation (pydantic)",
    "serialize_response": "response model",
    "_render": "render OrderOut",
}


def _bucket(filename: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[0].removesuffix(".py")
    if "shelfwise/" in filename:
        return "shelfwise." + filename.split("shelfwise/", 1)[1].split("/", 1)[0]
    return filename if filename.startswith("<") else "other"


async def _call(
    app: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


def report(profiler: Any, args: argparse.Namespace, done: int, unit: str, out: Any) -> None:
    """The profile of `done` requests: pyinstrument's page and text with `--html`, else
    cProfile's self time by package and its heaviest functions (`--top`)."""
    if args.html:
        with open(args.html, "w") as f:
            f.write(profiler.output_html())
        print("wrote", args.html, file=out)
        every_frame = bool(os.environ.get("PROFILE_ALL"))  # library frames too
        print(profiler.output_text(unicode=True, show_all=every_frame), file=out)
        return
    stats = pstats.Stats(profiler, stream=out)
    by_pkg: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_pkg[_bucket(filename)] += tottime
        total += tottime
    print(
        f"\nself time by package (share of {total / done * 1e6:.0f} us/{unit} profiled):",
        file=out,
    )
    for pkg, t in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:25]:
        print(f"  {pkg:<40} {t / total * 100:5.1f} %  {t / done * 1e6:7.0f} us", file=out)
    stats.sort_stats(args.sort).print_stats(args.top)


def bench_app(url: str) -> Any:
    """The app as the served benchmarks run it: access log on, JSON logs, rate limits off
    (the raw baselines have none)."""
    from shelfwise.app import create_app
    from shelfwise.config import load_settings

    settings = load_settings(
        database_url=url,
        env="development",
        access_log=True,
        log_json=True,
        rate_limit_enabled=False,
    )
    return create_app(settings)


def _replay_use_case() -> None:
    """Replace the order use case with one that answers its first real outcome again."""
    from shelfwise.orders import service

    place = service.place_order
    outcome: Any = None

    async def replayed(*args: Any, **kwargs: Any) -> Any:
        nonlocal outcome
        if outcome is None:
            outcome = await place(*args, **kwargs)
        return outcome

    service.place_order = replayed  # type: ignore[assignment]


async def _run(args: argparse.Namespace, url: str, ids: list[str], out: Any) -> None:
    app = bench_app(url)
    if args.stack_only:
        _replay_use_case()
    async with app.router.lifespan_context(app):
        status, raw = await _call(
            app,
            "POST",
            "/v1/auth/login",
            {"content-type": "application/json"},
            json.dumps(
                {"email": "customer@shelfwise.local", "password": "customer-demo-password"}
            ).encode(),
        )
        assert status == 200, raw
        token = json.loads(raw)["access_token"]
        ctx = app.state.ctx
        async with ctx.driver.connection() as conn:
            location = (await (await conn.execute(SHELF)).fetchone())["id"]
        rng = random.Random(14)
        statuses: dict[int, int] = defaultdict(int)

        async def one() -> None:
            body = json.dumps(
                {
                    "lines": [{"product_id": rng.choice(ids), "quantity": 1}],
                    "location_id": str(location),
                }
            ).encode()
            headers = {
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "idempotency-key": uuid.uuid4().hex,
            }
            status, _ = await _call(app, "POST", "/v1/orders", headers, body)
            statuses[status] += 1

        async def worker(n: int) -> None:
            for _ in range(n):
                await one()

        per = max(1, args.requests // args.concurrency)
        await asyncio.gather(
            *(worker(max(1, 200 // args.concurrency)) for _ in range(args.concurrency))
        )
        statuses.clear()
        profiler: Any
        if args.html:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled", interval=0.0005)
        else:
            profiler = cProfile.Profile()
        gc_before = [g["collections"] for g in gc.get_stats()]
        times0 = os.times()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if args.profile:
            profiler.start() if args.html else profiler.enable()
        await asyncio.gather(*(worker(per) for _ in range(args.concurrency)))
        if args.profile:
            profiler.stop() if args.html else profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        times1 = os.times()
        done = sum(statuses.values())
        collections = [
            round((g["collections"] - before) * 1000 / done, 1)
            for g, before in zip(gc.get_stats(), gc_before, strict=True)
        ]
        print(
            f"statuses {dict(statuses)}  orders/s {done / wall:.0f}  "
            f"process CPU/order {cpu / done * 1e6:.0f} us"
            f" (user {(times1.user - times0.user) / done * 1e6:.0f}"
            f" + system {(times1.system - times0.system) / done * 1e6:.0f})"
            f"{' (profiler overhead included)' if args.profile else ''}"
            f"  GC collections per 1,000 orders (gen 0/1/2) {collections}",
            file=out,
        )
        if args.profile:
            report(profiler, args, done, "order", out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--html")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--sort", default="cumulative", help="cProfile's order (tottime: self)")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--stack-only", action="store_true", help="the use case replayed")
    args = parser.parse_args()
    url, ids = prepare_database(10_000)
    # The access log (one JSON line per request, on stderr) goes to a file then removed;
    # the report stays on stdout, and a failure's traceback is printed there too.
    stderr = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            asyncio.run(_run(args, url, ids, sys.stdout))
        except BaseException:
            traceback.print_exc(file=sys.stdout)
            raise
        finally:
            os.dup2(stderr, 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
