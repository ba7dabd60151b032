"""Shared pieces of the cluster e2e tests: a signed-in staff member and customer, stock to
sell, and a steady mixed load through nginx that records every answer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace
from typing import Any, cast

import httpx
import psycopg

from shelfwise.clock import SystemClock
from shelfwise.config import Environment, Settings
from shelfwise.context import AppContext
from shelfwise.db import open_database
from shelfwise.identity.models import Role
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.tokens import TokenIssuer
from tests.support import create_location, create_product, make_user, receive_stock

# Generous application limits: these tests are about the topology, not the limits.
LOAD_APP_ENV = {
    "SHELFWISE_RATE_LIMIT_ANONYMOUS": "100000/minute",
    "SHELFWISE_RATE_LIMIT_AUTHENTICATED": "100000/minute",
    "SHELFWISE_MAX_CONCURRENT_REQUESTS_PER_CLIENT": "1000",
}


@asynccontextmanager
async def user_maker(
    database_url: str,
) -> AsyncIterator[Callable[[Role], Awaitable[dict[str, Any]]]]:
    """Makes users (and wall-clock access tokens the cluster's instances accept, signed with
    the same development key) straight in the database: no in-process app, whose hub and
    feeds these tests do not need."""
    settings = Settings(_env_file=None, env=Environment.TEST, database_url=database_url)  # type: ignore[call-arg]
    db = open_database(settings, database_url)
    hasher = PasswordHasher(memory_kib=settings.argon2_memory_kib, time_cost=1, parallelism=1)
    tokens = TokenIssuer(
        keys={settings.jwt_key_id: settings.jwt_secret.get_secret_value().encode()},
        signing_kid=settings.jwt_key_id,
        issuer=settings.jwt_issuer,
        ttl=timedelta(seconds=settings.access_token_ttl_seconds),
    )
    ctx = cast(
        AppContext, SimpleNamespace(db=db, hasher=hasher, tokens=tokens, clock=SystemClock())
    )

    async def make(role: Role) -> dict[str, Any]:
        return await make_user(ctx, role)

    try:
        yield make
    finally:
        hasher.close()
        await db.dispose()


@dataclass
class Shop:
    staff: dict[str, Any]
    customer: dict[str, Any]
    product_ids: list[str]
    location_id: str


async def open_shop(client: httpx.AsyncClient, database_url: str, *, products: int = 3) -> Shop:
    async with user_maker(database_url) as make:
        staff = await make(Role.STAFF)
        customer = await make(Role.CUSTOMER)
    location = await create_location(client, staff["headers"])
    ids = []
    for _ in range(products):
        product = await create_product(client, staff["headers"])
        received = await receive_stock(
            client, staff["headers"], product["id"], location["id"], 100_000
        )
        assert received.status_code == 201, received.text
        ids.append(product["id"])
    return Shop(staff, customer, ids, location["id"])


@dataclass
class LoadReport:
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # 5xx and connection errors
    orders: dict[str, str] = field(default_factory=dict)  # idempotency key -> order id

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


async def _one(client: httpx.AsyncClient, shop: Shop, n: int, report: LoadReport) -> None:
    kind = ("read", "order", "adjust", "read")[n % 4]
    product = shop.product_ids[n % len(shop.product_ids)]
    key = f"load-{uuid.uuid4().hex}"
    try:
        if kind == "read":
            response = await client.get(f"/v1/products/{product}")
        elif kind == "order":
            response = await client.post(
                "/v1/orders",
                json={"lines": [{"product_id": product, "quantity": 1}]},
                headers={**shop.customer["headers"], "Idempotency-Key": key},
            )
            if response.status_code == 201:
                report.orders[key] = response.json()["id"]
        else:
            response = await client.post(
                "/v1/stock/adjustments",
                json={
                    "product_id": product,
                    "location_id": shop.location_id,
                    "kind": "receipt",
                    "quantity": 1,
                    "reason": "load",
                },
                headers={**shop.staff["headers"], "Idempotency-Key": key},
            )
    except httpx.TransportError as exc:
        report.failures.append(f"{kind}: {type(exc).__name__} {exc}")
        report.statuses[f"{kind} error"] += 1
        return
    report.statuses[f"{kind} {response.status_code}"] += 1
    if response.status_code >= 500 or response.status_code not in (200, 201):
        report.failures.append(f"{kind}: {response.status_code} {response.text[:200]}")


async def steady_load(
    client: httpx.AsyncClient, shop: Shop, stop: asyncio.Event, *, concurrency: int = 4
) -> LoadReport:
    """`concurrency` clients in a loop (reads, keyed orders, keyed adjustments) until `stop`."""
    report = LoadReport()
    counter = iter(range(10**9))

    async def client_loop() -> None:
        while not stop.is_set():
            await _one(client, shop, next(counter), report)

    await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    return report


def orders_per_id(database_url: str, order_ids: list[str]) -> Counter[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id::text FROM orders WHERE id = ANY(%s::uuid[])", (order_ids,)
        ).fetchall()
    return Counter(row[0] for row in rows)


def reconcile(database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shelfwise.cli", "reconcile"],
        env={"DATABASE_URL": database_url, "SHELFWISE_ENV": "test", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
