"""The console for admins (webhooks and their delivery log, the ops charts), at phone
width, and for a customer who signs in: panels follow the role, and nothing is asked
for that the role may not read."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Route, expect

from shelfwise.context import AppContext
from shelfwise.pagination import PageRequest
from shelfwise.webhooks import service as webhooks
from shelfwise.webhooks.sender import Attempt
from tests.e2e.console_support import (
    axe_violations,
    chromium,
    open_console,
    screenshot,
    sign_in,
)
from tests.live_support import running_relay, serve, settle
from tests.support import create_location, create_product, receive_stock

pytestmark = pytest.mark.e2e

WEBHOOK_URL = "https://93.184.215.14/hook"  # a public address: passes the SSRF check


async def refuse(route: Route) -> None:
    await route.abort("connectionrefused")


async def unavailable(route: Route) -> None:
    await route.fulfill(
        status=503,
        headers={"Content-Type": "application/problem+json", "Retry-After": "1"},
        body='{"status": 503, "title": "Unavailable", "detail": "The database is restarting"}',
    )


async def one_delivered_webhook(
    ctx: AppContext, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """A webhook with one succeeded delivery (the attempt is recorded, not sent)."""
    response = await client.post(
        "/v1/webhooks",
        json={"url": WEBHOOK_URL, "event_types": ["product.created"]},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    product = await create_product(client, headers, sku="HOOK-1", name="Hooked lamp")
    location = await create_location(client, headers)
    stocked = await receive_stock(client, headers, product["id"], location["id"], 3)
    assert stocked.status_code == 201, stocked.text
    await settle(ctx)
    async with ctx.db.sessions() as session:
        assert await webhooks.fan_out(session) > 0
    async with ctx.db.sessions() as session:
        page = await webhooks.list_deliveries(
            session, uuid.UUID(response.json()["id"]), page=PageRequest(limit=5)
        )
    [delivery] = page.items
    async with ctx.db.sessions() as session:
        await webhooks.record_attempt(
            session,
            delivery.id,
            Attempt(ok=True, status_code=200, latency_ms=12, error=None, response_body="ok"),
            final=False,
            disable_after=5,
            now=ctx.clock.now(),
        )


async def test_admins_work_webhooks_and_ops_and_sign_out(
    app: Any, ctx: AppContext, client: httpx.AsyncClient, admin: dict[str, Any], database_url: str
) -> None:
    async with running_relay(database_url), serve(app) as address, chromium() as browser:
        await one_delivered_webhook(ctx, client, admin["headers"])
        watched = await open_console(browser, address)
        page = watched.page
        await sign_in(watched, admin["email"])

        # Keyboard: "/" jumps to the stock search; a tab opens with Enter and its heading
        # takes the focus, so a screen reader announces where the user is.
        await expect(page.locator("#stock tbody tr", has_text="HOOK-1")).to_be_visible()
        await page.keyboard.press("/")
        await expect(page.get_by_label("Search SKU or name")).to_be_focused()
        await page.get_by_role("link", name="Orders").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_role("heading", name="Orders", exact=True)).to_be_focused()

        # An error state: the stock list cannot be loaded; the panel says so, and recovers.
        await page.get_by_role("link", name="Stock").click()
        await page.route("**/v1/stock/overview*", unavailable)
        await page.get_by_label("Search SKU or name").fill("hook")
        await expect(page.locator("#stock-message")).to_have_text(
            "Stock could not be loaded: The database is restarting"
        )
        await page.unroute("**/v1/stock/overview*")
        await page.get_by_label("Search SKU or name").fill("hooked")
        await expect(page.locator("#stock tbody tr")).to_have_count(1)
        await expect(page.locator("#stock-message")).to_have_text("")
        watched.statuses[:] = [s for s in watched.statuses if s[0] != 503]
        watched.console_errors[:] = [e for e in watched.console_errors if "503" not in e]

        await page.get_by_role("link", name="Webhooks").click()
        await expect(page.locator("#webhooks li")).to_contain_text(WEBHOOK_URL)
        delivery = page.locator("#deliveries tbody tr")
        await expect(delivery).to_have_count(1)
        await expect(delivery).to_contain_text("product.created")
        await expect(delivery).to_contain_text("succeeded")
        await expect(delivery).to_contain_text("12 ms")
        violations = await axe_violations(page)
        await screenshot(page, "console-webhooks")

        await page.get_by_role("link", name="Operations").click()
        for name in ("orders", "lag", "queue", "connections"):
            await expect(page.locator(f"#chart-{name} polyline")).to_have_count(1)
        await expect(page.locator("#ops-connections")).to_have_text(re.compile(r"^\d+ \("))
        violations += await axe_violations(page)
        await screenshot(page, "console-ops")

        await page.get_by_role("button", name="Sign out").click()
        await expect(
            page.get_by_role("heading", name="Sign in to the staff console")
        ).to_be_visible()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "idle")
        assert watched.problems() == []
        assert violations == []


async def test_phone_width_and_a_customer_see_only_their_panels(
    app: Any,
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    database_url: str,
) -> None:
    product = await create_product(client, staff["headers"], sku="PHONE-1", name="Travel mug")
    location = await create_location(client, staff["headers"])
    response = await receive_stock(client, staff["headers"], product["id"], location["id"], 9)
    assert response.status_code == 201

    async with running_relay(database_url), serve(app) as address, chromium() as browser:
        # Staff at 390 px on a network where SSE never gets through (a buffering proxy):
        # the page falls back to long-poll and still sees changes.
        watched = await open_console(browser, address, width=390, height=844)
        page = watched.page
        await page.route("**/v1/stream*", refuse)
        await sign_in(watched, staff["email"])
        stock_row = page.locator("#stock tbody tr", has_text="PHONE-1")
        await expect(stock_row).to_contain_text("Travel mug")
        await expect(stock_row.locator(".on_hand")).to_have_text("9")
        response = await receive_stock(client, staff["headers"], product["id"], location["id"], 2)
        assert response.status_code == 201
        await expect(stock_row.locator(".on_hand")).to_have_text("11")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "polling")
        refused = [f for f in watched.failed if "/v1/stream" in f]
        assert refused
        assert all("ERR_CONNECTION_REFUSED" in f for f in refused)
        watched.failed[:] = [f for f in watched.failed if f not in refused]
        watched.console_errors[:] = [
            e for e in watched.console_errors if "ERR_CONNECTION_REFUSED" not in e
        ]
        # Nothing wider than the screen, every cell still labelled.
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at a 390 px viewport"
        violations = await axe_violations(page)
        await screenshot(page, "console-phone-stock")
        await page.get_by_role("link", name="Orders").click()
        await expect(page.locator("#orders-message")).to_have_text(re.compile("^No orders yet"))
        violations += await axe_violations(page)
        await screenshot(page, "console-phone-orders")
        assert watched.problems() == []

        # A customer: their own orders and stock to read, no staff panel, no refusals.
        shopper = await open_console(browser, address)
        await sign_in(shopper, customer["email"])
        tabs = shopper.page.locator("#tabs a")
        await expect(tabs).to_have_text(["Stock", "Orders"])
        await expect(shopper.page.locator("#stock tbody tr", has_text="PHONE-1")).to_be_visible()
        await expect(shopper.page.get_by_role("button", name=re.compile("^Adjust"))).to_have_count(
            0
        )
        asked = [url for _, url in shopper.statuses]
        assert not [u for u in asked if re.search(r"/v1/(webhooks|users|jobs|admin)|/metrics", u)]
        assert shopper.problems() == []
    assert violations == []
