"""Catalog caching across instances: a change made through one instance evicts the
cached copy in another, through the outbox stream — not after a TTL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.identity.models import Role
from tests.live_support import running_relay
from tests.support import create_product, make_user, wait_until


async def test_change_on_one_instance_evicts_the_other_instances_copy(
    settings: Settings, clock: FixedClock, database_url: str
) -> None:
    first, second = create_app(settings, clock=clock), create_app(settings, clock=clock)
    async with first.router.lifespan_context(first), second.router.lifespan_context(second):
        ctx_first: AppContext = first.state.ctx
        ctx_second: AppContext = second.state.ctx
        staff = await make_user(ctx_first, Role.STAFF)
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://s.test")
            for app in (first, second)
        ]
        one, two = clients
        try:
            product = await create_product(one, staff["headers"], name="Blue mug")
            path = f"/v1/products/{product['id']}"
            assert (await two.get(path)).json()["name"] == "Blue mug"  # now cached in two
            assert ctx_second.catalog_cache.products.peek(_uuid(product)) is not None
            async with running_relay(database_url):
                renamed = await one.patch(
                    path, json={"name": "Red mug"}, headers={**staff["headers"], "If-Match": '"v1"'}
                )
                assert renamed.status_code == 200

                async def evicted() -> bool:
                    await ctx_second.hub.catch_up()  # type: ignore[union-attr]
                    return ctx_second.catalog_cache.products.peek(_uuid(product)) is None

                await wait_until(evicted, what="the second instance to evict its copy")
            fresh = await two.get(path)
            assert fresh.json()["name"] == "Red mug"
            assert fresh.headers["ETag"] == '"v2"'
            # The instance that made the change evicted at once (read-your-writes).
            assert (await one.get(path)).json()["name"] == "Red mug"
        finally:
            for client in clients:
                await client.aclose()


async def test_list_pages_are_evicted_by_any_product_change(
    client: httpx.AsyncClient, staff: dict[str, Any]
) -> None:
    await create_product(client, staff["headers"], name="Alpha")
    first = await client.get("/v1/products", params={"sort": "name"})
    assert [p["name"] for p in first.json()["data"]] == ["Alpha"]
    await create_product(client, staff["headers"], name="Beta")
    second = await client.get("/v1/products", params={"sort": "name"})
    assert [p["name"] for p in second.json()["data"]] == ["Alpha", "Beta"]


def _uuid(product: dict[str, Any]) -> uuid.UUID:
    return uuid.UUID(product["id"])
