"""kill -9 of an API instance in the middle of a burst of keyed orders through nginx.

nginx routes around the dead instance (the connection it was using breaks, the next
connect is refused, both are retried on the other instance because every order carries an
Idempotency-Key). An order that was in flight on the killed instance either committed or
did not; the client's retry with the same key gets the same answer, and each key ends as
exactly one order.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.cluster_support import running_cluster
from tests.e2e.cluster_load import LOAD_APP_ENV, Shop, open_shop, orders_per_id

pytestmark = pytest.mark.e2e

BURST = 120
RETRIES = 5


async def place_until_answered(
    client: httpx.AsyncClient, shop: Shop, key: str, product_id: str
) -> tuple[list[str], httpx.Response]:
    """POST the order; on a connection error, a 5xx or 'key in progress', retry with the
    same key, as a client should. Returns what went wrong on the way and the final answer."""
    trouble: list[str] = []
    for _ in range(RETRIES):
        try:
            response = await client.post(
                "/v1/orders",
                json={"lines": [{"product_id": product_id, "quantity": 1}]},
                headers={**shop.customer["headers"], "Idempotency-Key": key},
            )
        except httpx.TransportError as exc:
            trouble.append(type(exc).__name__)
            continue
        if response.status_code == 201:
            return trouble, response
        trouble.append(f"{response.status_code} {response.text[:120]}")
        if response.status_code != 409 and response.status_code < 500:
            return trouble, response
        await asyncio.sleep(float(response.headers.get("retry-after", "0.2")))
    raise AssertionError(f"{key}: no answer after {RETRIES} tries: {trouble}")


async def test_kill_9_mid_burst_loses_and_duplicates_nothing(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cluster(database_url, tmp_path, apis=2, app_env=LOAD_APP_ENV) as cluster:
        async with cluster.client(timeout=20.0) as client:
            shop = await open_shop(client, database_url, products=2)
            keys = [f"kill-{n}-{uuid.uuid4().hex[:8]}" for n in range(BURST)]
            gate = asyncio.Semaphore(12)
            killed = asyncio.Event()

            answered_after_kill = 0

            async def order(n: int, key: str) -> tuple[list[str], httpx.Response]:
                nonlocal answered_after_kill
                async with gate:
                    if n == BURST // 3:
                        killed.set()
                    result = await place_until_answered(client, shop, key, shop.product_ids[n % 2])
                    answered_after_kill += not cluster.child("api-1").alive
                    return result

            async def kill_when_due() -> None:
                await killed.wait()
                assert await cluster.kill("api-1") == -9

            results, _ = await asyncio.gather(
                asyncio.gather(*(order(n, key) for n, key in enumerate(keys))),
                kill_when_due(),
            )
            answers = {key: response for key, (_, response) in zip(keys, results, strict=True)}
            seen_trouble = [t for trouble, _ in results for t in trouble]
            print(f"client-visible trouble before the final answer: {seen_trouble}")
            print(f"answered after the kill: {answered_after_kill}")
            assert answered_after_kill > BURST // 3  # the burst went on without api-1
            assert {r.status_code for r in answers.values()} == {201}
            assert not cluster.child("api-1").alive

            # The same request again, now that the dust settled: the same order, replayed.
            for n in range(0, BURST, BURST // 12):
                same = await client.post(
                    "/v1/orders",
                    json={"lines": [{"product_id": shop.product_ids[n % 2], "quantity": 1}]},
                    headers={**shop.customer["headers"], "Idempotency-Key": keys[n]},
                )
                assert same.status_code == 201, same.text
                assert same.json()["id"] == answers[keys[n]].json()["id"]
                assert same.headers.get("idempotent-replayed") == "true"

        order_ids = [response.json()["id"] for response in answers.values()]
        assert len(set(order_ids)) == BURST  # one order per key
        counts = orders_per_id(cluster.direct_url, order_ids)
        assert set(counts.values()) == {1}
        assert len(counts) == BURST
        with psycopg.connect(cluster.direct_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM orders WHERE placed_by_user_id = %s",
                (shop.customer["id"],),
            ).fetchone()
        assert row == (BURST,)  # nothing committed that no client got an answer for
