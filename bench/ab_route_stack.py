"""The route table (decision 0045) and the direct route's lean path (0047), on and off in
one process: the CPU of the stack around an order, A/B in alternated blocks.

    python -m bench.ab_route_stack [--mode both|table|direct] [--blocks 20]

On this shared two-core host, separate processes minutes apart differ by ±20 % (other
helpers' benchmarks), more than these changes. Here one app serves blocks of 800 orders
(16 in flight, the use case replayed as `bench.profile_orders --stack-only` does), and
between blocks the change is switched: the app router's dispatch set back to FastAPI's
walk (`router.app`), and/or the direct route's `handle` set back to `APIRoute.handle`.
Each side's process CPU is summed over its blocks; the order of the two sides alternates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from typing import Any

from fastapi.routing import APIRoute

from bench import profile_orders as po
from bench.servers import prepare_database

BLOCK = 800


async def _run(args: argparse.Namespace, url: str, ids: list[str]) -> dict[bool, float]:
    from shelfwise.orders.router import router as orders_router

    app = po.bench_app(url)
    po._replay_use_case()
    table, walk = app.router.middleware_stack, app.router.app
    placing = next(r for r in orders_router.routes if getattr(r, "path", "") == "/v1/orders")
    direct_class: Any = type(placing)
    lean = direct_class.handle

    def switch(on: bool) -> None:
        app.router.middleware_stack = table if on or args.mode == "direct" else walk
        direct_class.handle = lean if on or args.mode == "table" else APIRoute.handle

    async with app.router.lifespan_context(app):
        login = json.dumps(
            {"email": "customer@shelfwise.local", "password": "customer-demo-password"}
        ).encode()
        _, raw = await po._call(
            app, "POST", "/v1/auth/login", {"content-type": "application/json"}, login
        )
        token = json.loads(raw)["access_token"]
        async with app.state.ctx.driver.connection() as conn:
            location = (await (await conn.execute(po.SHELF)).fetchone())["id"]
        rng = random.Random(14)

        async def one() -> None:
            line = {"product_id": rng.choice(ids), "quantity": 1}
            body = json.dumps({"lines": [line], "location_id": str(location)}).encode()
            headers = {
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "idempotency-key": uuid.uuid4().hex,
            }
            status, _ = await po._call(app, "POST", "/v1/orders", headers, body)
            assert status == 201, status

        async def block() -> None:
            async def worker() -> None:
                for _ in range(BLOCK // 16):
                    await one()

            await asyncio.gather(*(worker() for _ in range(16)))

        for on in (True, False):  # warm-up
            switch(on)
            await block()
        cpu = {True: 0.0, False: 0.0}
        for i in range(args.blocks):
            for on in (True, False) if i % 2 == 0 else (False, True):
                switch(on)
                started = time.process_time()
                await block()
                cpu[on] += time.process_time() - started
        return {on: cpu[on] / (BLOCK * args.blocks) * 1e6 for on in cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("both", "table", "direct"), default="both")
    parser.add_argument("--blocks", type=int, default=20)
    args = parser.parse_args()
    url, ids = prepare_database(10_000)
    stderr = os.dup(2)
    with tempfile.TemporaryFile() as log:  # the access log
        os.dup2(log.fileno(), 2)
        try:
            per_order = asyncio.run(_run(args, url, ids))
        finally:
            os.dup2(stderr, 2)
    print(
        f"{args.mode}: on {per_order[True]:.1f} us/order, off {per_order[False]:.1f} us/order "
        f"({per_order[True] - per_order[False]:+.1f}), {args.blocks} blocks of {BLOCK} each",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
