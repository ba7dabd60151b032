"""The raw baseline: what the same two reads cost with no framework work beyond routing.

FastAPI + an asyncpg pool, no middleware, no ORM, no response model, the same SQL as
Shelfwise's catalog reads and the same URL paths, so one load generator script drives both.
Shelfwise's throughput is judged as a fraction of this app's, measured on the same machine
in the same run — absolute numbers from a 2-core box mean little on their own.

Run by `bench.run` as `python -m bench.baseline --port N` with `BENCH_DATABASE_URL` set;
uvicorn with uvloop + httptools and one worker, like `shelfwise serve`.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg
import uvicorn
from fastapi import FastAPI, Request, Response

COLUMNS = (
    "id, sku, name, description, category, price_minor, currency, version, created_at, updated_at"
)
BY_ID = f"SELECT {COLUMNS} FROM products WHERE id = $1"
# Shelfwise fetches limit + 1 rows to learn `has_more`; so does the baseline.
FIRST_PAGE = f"SELECT {COLUMNS} FROM products ORDER BY created_at, id LIMIT $1"
# Placing a one-line order: the three statements of Shelfwise's hot path, one transaction.
# The stock level is found by its (product, location) key, like `WHERE id = $1` on its id.
RESERVE = (
    "UPDATE stock_levels SET reserved = reserved + 1"
    " WHERE product_id = $1 AND location_id = $2 AND on_hand - reserved >= 1 RETURNING id"
)
INSERT_ORDER = (
    "INSERT INTO orders (status, placed_by_user_id, currency, total_minor, expires_at)"
    " VALUES ('reserved', $1, 'EUR', 0, now() + interval '15 minutes')"
    " RETURNING id, status, currency, total_minor, expires_at, version, created_at, updated_at"
)
INSERT_EVENT = (
    "INSERT INTO outbox_events (type, aggregate_type, aggregate_id, payload)"
    " VALUES ('bench.order_placed', 'order', $1, $2::jsonb)"
)
CUSTOMER = "SELECT id FROM users WHERE email = 'customer@shelfwise.local'"


def _default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUID


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, default=_default, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
    )


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Same ceiling as Shelfwise's default pool (10 + 5 overflow).
    app.state.pool = await asyncpg.create_pool(
        os.environ["BENCH_DATABASE_URL"], min_size=10, max_size=15
    )
    app.state.customer = await app.state.pool.fetchval(CUSTOMER)  # None before seeding users
    try:
        yield
    finally:
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/readyz")
async def readyz(request: Request) -> Response:
    await request.app.state.pool.fetchval("SELECT 1")
    return _json({"status": "ready"})


@app.get("/v1/products/{product_id}")
async def get_product(product_id: uuid.UUID, request: Request) -> Response:
    row = await request.app.state.pool.fetchrow(BY_ID, product_id)
    if row is None:
        return _json({"detail": "not found"}, 404)
    return _json(dict(row))


@app.get("/v1/products")
async def list_products(request: Request, limit: int = 50) -> Response:
    limit = min(max(limit, 1), 100)
    rows = await request.app.state.pool.fetch(FIRST_PAGE, limit + 1)
    items = [dict(row) for row in rows[:limit]]
    return _json({"data": items, "next_cursor": None, "has_more": len(rows) > limit})


@app.post("/v1/orders")
async def place_order(request: Request) -> Response:
    body = json.loads(await request.body())
    line = body["lines"][0]
    product_id, location_id = uuid.UUID(line["product_id"]), uuid.UUID(body["location_id"])
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        level = await conn.fetchval(RESERVE, product_id, location_id)
        if level is None:
            return _json({"detail": "insufficient stock"}, 409)
        order = dict(await conn.fetchrow(INSERT_ORDER, request.app.state.customer))
        payload = {"order_id": str(order["id"]), "product_id": str(product_id), "quantity": 1}
        await conn.execute(INSERT_EVENT, str(order["id"]), json.dumps(payload))
    return _json(order, 201)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "bench.baseline:app",  # an import string: uvicorn's workers import it themselves
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        timeout_worker_healthcheck=60,  # as `shelfwise serve`: slow starts on a busy host
        loop="uvloop",
        http="httptools",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
