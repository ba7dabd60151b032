from __future__ import annotations

import gc
from typing import Any

import httpx

from shelfwise.config import Settings
from tests.support import create_location, create_product, receive_stock


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}


async def test_receipt_shows_in_levels_and_ledger(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    response = await receive_stock(client, staff["headers"], product["id"], location["id"], 7)
    assert response.status_code == 201, response.text
    level = response.json()["level"]
    assert (level["on_hand"], level["reserved"], level["available"]) == (7, 0, 7)
    moves = await client.get(
        "/v1/stock/movements", params={"product_id": product["id"]}, headers=staff["headers"]
    )
    assert [m["on_hand_delta"] for m in moves.json()["data"]] == [7]


async def test_the_running_app_tunes_the_garbage_collector(app: Any, settings: Settings) -> None:
    """Start-up objects frozen out of full passes, the young generation collected less
    often (docs/live.md, "Fan-out cost")."""
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == settings.gc_gen0_threshold != 700
