"""The same-work baseline: Shelfwise's one-line order statements with no stack around them.

`bench.baseline` is the raw ceiling (three statements, no ledger, no idempotency, no
events); this app does *exactly the statements Shelfwise executes* for a one-line
`POST /v1/orders` with an `Idempotency-Key`, in the same order, on the same driver
(psycopg 3, a pool of 10 autocommit connections) and the same transport (`batches.py`:
each batch one simple query, statements prepared on the server at first use):

    principal look-up                  ACTIVE_ROLE_SQL          (own checkout, autocommit)
    BEGIN                                                       ┐ batch 1,
    idempotency claim                  TRY_LOCK, FIND           │ one round trip
    reservation (under the claim)      RESERVE_AT_LOCATION_CLAIMED ┘
    order + line + ledger row + events WRITE_ORDER              ┐ batch 2,
    idempotency record                 RECORD                   │ one round trip
    COMMIT                                                      ┘

The SQL strings are imported from Shelfwise's modules, so the two cannot drift apart; the
event payloads come from the same builders (`events/payloads.py`), so the rows written
are the same size. What it leaves out is the stack: no FastAPI, no middleware, no JWT
verification (the caller is the demo customer, looked up once at start-up; its role is
still read per request, as Shelfwise does), no request model, no metrics, no logging.
Routing is a dict look-up on (method, path) in a bare ASGI callable.

The ratio Shelfwise / this app is the cost of the stack; `bench.baseline` / this app is
the cost of the work. It writes real orders, lines and ledger rows, so `shelfwise
reconcile` stays exact after a run (nothing to undo, unlike `bench.baseline`).

    python -m bench.samework --port N [--workers 2]     (BENCH_DATABASE_URL set)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import uvicorn
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from shelfwise import batches
from shelfwise.events.outbox import Event
from shelfwise.events.payloads import EventType, order_payload, stock_changed_event
from shelfwise.idempotency.service import FIND, RECORD, TRY_LOCK
from shelfwise.identity.service import ACTIVE_ROLE_SQL
from shelfwise.orders.store import RESERVE_AT_LOCATION_CLAIMED, WRITE_ORDER

CUSTOMER = "SELECT id FROM users WHERE email = 'customer@shelfwise.local'"
RESERVATION_TTL = timedelta(minutes=15)
Send = Any
Receive = Any
Scope = dict[str, Any]


class State:
    pool: AsyncConnectionPool
    customer: uuid.UUID


STATE = State()


async def _respond(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body, separators=(",", ":"), default=str).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
    async with STATE.pool.connection() as conn:
        await conn.execute("SELECT 1")
    await _respond(send, 200, {"status": "ready"})


async def _roll_back(conn: Any) -> None:
    batches.forget_prepared(conn)  # as Shelfwise: psycopg may deallocate every statement
    await conn.execute("ROLLBACK")


async def place_order(scope: Scope, receive: Receive, send: Send) -> None:
    raw = await _body(receive)
    body = json.loads(raw)
    ((line,),) = (body["lines"],)
    product_id, quantity = uuid.UUID(line["product_id"]), int(line["quantity"])
    location_id = uuid.UUID(body["location_id"])
    key = dict(scope["headers"]).get(b"idempotency-key", b"").decode()
    user_id = STATE.customer
    principal = f"user:{user_id}"
    fingerprint = hashlib.sha256(b"POST /v1/orders\x1f" + raw).hexdigest()
    pool = STATE.pool

    async with pool.connection() as conn:  # the principal's role, as on every request
        role = await (await conn.execute(ACTIVE_ROLE_SQL, (user_id,))).fetchone()
    if role is None:
        return await _respond(send, 401, {"detail": "inactive"})

    async with pool.connection() as conn:
        # As Shelfwise (docs/decisions/0035, 0041): BEGIN, the claim and the guarded
        # reservation in one round trip, then the order, the record and COMMIT in a second.
        batch = batches.Batch(conn, prepare=True)
        batch.queue(batches.BEGIN)
        claim = {"claim_lock": principal + "\x1f" + key, "principal": principal, "key": key}
        locked = batch.queue(TRY_LOCK, (claim["claim_lock"],))
        found = batch.queue(FIND, (principal, key))
        params = {"product_id": product_id, "location_id": location_id, "quantity": quantity}
        reserving = batch.queue(RESERVE_AT_LOCATION_CLAIMED, {**params, **claim})
        lock_row = await locked.fetchone()
        if not (lock_row and lock_row[0]):
            await _roll_back(conn)
            return await _respond(send, 409, {"detail": "in progress"})
        stored = await found.fetchone()
        if stored is not None:
            await _roll_back(conn)
            return await _respond(send, stored[1], stored[2])
        level = await reserving.fetchone()
        if level is None:
            # Shelfwise explains a shortfall through its general path; under the bench's
            # full shelves this is rare, and it answers 409 just the same.
            await _roll_back(conn)
            return await _respond(send, 409, {"detail": "insufficient stock"})
        level_id, on_hand, reserved, level_version, price, currency, placed_at = level
        order_id = uuid.uuid4()
        expires_at = datetime.now(UTC) + RESERVATION_TTL
        total = price * quantity
        payload = order_payload(
            order_id,
            "reserved",
            currency=currency,
            total_minor=total,
            expires_at=expires_at,
            lines=[(product_id, location_id, quantity)],
            placed_by_user_id=user_id,
        )
        events = [
            stock_changed_event(
                stock_level_id=level_id,
                product_id=product_id,
                location_id=location_id,
                on_hand=on_hand,
                reserved=reserved,
                level_version=level_version,
                cause="reserve",
                reference=f"order:{order_id}",
            ),
            Event(EventType.ORDER_RESERVED.value, "order", str(order_id), payload),
        ]
        lines = [
            {
                "stock_level_id": level_id,
                "product_id": str(product_id),
                "location_id": str(location_id),
                "quantity": quantity,
                "unit_price_minor": price,
            }
        ]
        batch.queue(
            WRITE_ORDER,
            {
                "id": order_id,
                "currency": currency,
                "total_minor": total,
                "expires_at": expires_at,
                "user_id": user_id,
                "api_key_id": None,
                "actor_id": user_id,
                "version": 1,
                "placed_at": placed_at,
                "lines": json.dumps(lines),
                "events": json.dumps([asdict(e) for e in events], default=str),
            },
        )
        out = {
            "id": str(order_id),
            "status": "reserved",
            "currency": currency,
            "total_minor": total,
            "expires_at": expires_at.isoformat(),
            "version": 1,
            "created_at": placed_at.isoformat(),
            "lines": lines,
        }
        batch.queue(RECORD, (principal, key, fingerprint, 201, Jsonb(out)))
        batch.queue(batches.COMMIT)
        await batch.send()
    await _respond(send, 201, out)


ROUTES = {("GET", "/readyz"): readyz, ("POST", "/v1/orders"): place_order}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        STATE.pool = AsyncConnectionPool(
            os.environ["BENCH_DATABASE_URL"],
            min_size=1,
            max_size=10,  # Shelfwise's driver pool
            open=False,
            kwargs={"autocommit": True},
        )
        await STATE.pool.open(wait=True)
        async with STATE.pool.connection() as conn:
            row = await (await conn.execute(CUSTOMER)).fetchone()
        assert row is not None, "seed the demo users first (shelfwise seed --products 0)"
        STATE.customer = row[0]
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await STATE.pool.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    handler = ROUTES.get((scope["method"], scope["path"]))
    if handler is None:
        return await _respond(send, 404, {"detail": "not found"})
    await handler(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    uvicorn.run(
        "bench.samework:app",
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        timeout_worker_healthcheck=60,  # as `shelfwise serve`: slow starts on a busy host
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
