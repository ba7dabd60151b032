"""The staff console as a shop's staff member uses it, in Debian's Chromium.

One test walks the whole working day of a staff user on one server and one browser (a
browser launch costs more than each step): sign in; find stock by SKU and name, filter
by location and low stock, page through; watch a change arrive live and resume after
the connection drops; adjust and transfer stock from the page; work the order list
(customer, total, detail, confirm, cancel, fulfil). Throughout: no console error, no
failed request, not one 401 or 403, nothing requested that staff may not read, and axe
finds no serious or critical violation.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route, expect
from sqlalchemy import text

from shelfwise.context import AppContext
from tests.e2e.console_support import (
    axe_violations,
    chromium,
    open_console,
    screenshot,
    sign_in,
)
from tests.live_support import running_relay, serve, settle
from tests.support import create_product, receive_stock

pytestmark = pytest.mark.e2e

PRODUCTS = 28  # more than one page of 25


async def named_location(
    client: httpx.AsyncClient, headers: dict[str, str], code: str, name: str
) -> dict[str, Any]:
    response = await client.post(
        "/v1/locations", json={"code": code, "name": name}, headers=headers
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def stock_world(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    warehouse = await named_location(client, headers, "WH-MAIN", "Main warehouse")
    store = await named_location(client, headers, "ST-HIGH", "High Street store")
    products = []
    for i in range(PRODUCTS):
        name = "Blue enamel mug" if i == 3 else f"Oak shelf {i:02d}"
        product = await create_product(client, headers, sku=f"SKU-{i:03d}", name=name)
        quantity = 2 if i == 5 else 40  # SKU-005 is low at the warehouse
        response = await receive_stock(client, headers, product["id"], warehouse["id"], quantity)
        assert response.status_code == 201, response.text
        products.append(product)
    return {"warehouse": warehouse, "store": store, "products": products}


def row(page: Page, sku: str) -> Any:
    return page.locator("#stock tbody tr", has_text=sku)


async def place(client: httpx.AsyncClient, headers: dict[str, str], product_id: str) -> str:
    response = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": product_id, "quantity": 1}]},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def refuse(route: Route) -> None:
    await route.abort("connectionrefused")


async def test_staff_work_stock_and_orders_in_the_console(
    app: Any,
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    database_url: str,
) -> None:
    headers = staff["headers"]
    world = await stock_world(client, headers)
    mug = world["products"][3]
    first_order = await place(client, customer["headers"], world["products"][0]["id"])

    async with running_relay(database_url), serve(app) as address, chromium() as browser:
        watched = await open_console(browser, address)
        page = watched.page
        # Signed out: the sign-in form, and not one API request (no 401 at load).
        await expect(
            page.get_by_role("heading", name="Sign in to the staff console")
        ).to_be_visible()
        assert not [url for _, url in watched.statuses if "/v1/" in url]
        await sign_in(watched, staff["email"])
        # The production cookie settings work over http://127.0.0.1 (a secure context).
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["__Host-session"]["secure"]
        assert cookies["__Host-session"]["httpOnly"]

        # Stock by SKU, product name and location name; pages of 25; low stock marked.
        await expect(page.locator("#stock tbody tr")).to_have_count(25)
        first = page.locator("#stock tbody tr").first
        await expect(first).to_contain_text("SKU-000")
        await expect(first).to_contain_text("Oak shelf 00")
        await expect(first).to_contain_text("Main warehouse")
        assert not re.search(r"\b[0-9a-f]{8}\b", await first.inner_text())  # no UUID prefixes
        await expect(row(page, "SKU-005")).to_have_class(re.compile(r"\blow\b"))
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        await page.get_by_role("button", name="Next").click()
        await expect(page.locator("#stock tbody tr")).to_have_count(PRODUCTS - 25)
        await expect(page.locator("#stock-page")).to_have_text("Page 2")
        await page.get_by_role("button", name="Previous").click()
        await expect(page.locator("#stock tbody tr")).to_have_count(25)

        # Search by a name word, then only low stock, then by location.
        await page.get_by_label("Search SKU or name").fill("enamel")
        await expect(page.locator("#stock tbody tr")).to_have_count(1)
        await expect(row(page, "SKU-003")).to_contain_text("Blue enamel mug")
        await page.get_by_label("Search SKU or name").fill("")
        await page.get_by_label("Low stock only").check()
        await expect(page.locator("#stock tbody tr")).to_have_count(1)
        await expect(row(page, "SKU-005")).to_be_visible()
        await page.get_by_label("Low stock only").uncheck()
        await page.get_by_label("Location", exact=True).select_option(
            label="High Street store (ST-HIGH)"
        )
        await expect(page.locator("#stock-message")).to_have_text("No stock matches these filters.")
        await page.get_by_label("Location", exact=True).select_option(label="All locations")
        await page.get_by_label("Search SKU or name").fill("SKU-003")
        await expect(page.locator("#stock tbody tr")).to_have_count(1)
        await screenshot(page, "console-stock")

        # A change made elsewhere arrives live.
        mug_row = row(page, "SKU-003")
        await expect(mug_row.locator(".on_hand")).to_have_text("40")
        response = await receive_stock(client, headers, mug["id"], world["warehouse"]["id"], 2)
        assert response.status_code == 201
        await expect(mug_row.locator(".on_hand")).to_have_text("42")

        # The connection drops; a change happens meanwhile; the page resumes and gets it.
        for pattern in ("**/v1/stream*", "**/v1/poll*"):
            await page.route(pattern, refuse)
        assert ctx.hub is not None
        for subscription in list(ctx.hub._subscriptions):
            subscription.close("slow_consumer")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
        response = await receive_stock(client, headers, mug["id"], world["warehouse"]["id"], 3)
        assert response.status_code == 201
        await settle(ctx)
        await expect(mug_row.locator(".on_hand")).to_have_text("42")
        for pattern in ("**/v1/stream*", "**/v1/poll*"):
            await page.unroute(pattern)
        await expect(mug_row.locator(".on_hand")).to_have_text("45")
        await expect(page.locator("#connection")).to_have_attribute(
            "data-state", re.compile(r"^(live|polling)$")
        )
        # What the test refused on purpose is not a problem of the page.
        watched.failed[:] = [f for f in watched.failed if "ERR_CONNECTION_REFUSED" not in f]
        watched.console_errors[:] = [
            e for e in watched.console_errors if "ERR_CONNECTION_REFUSED" not in e
        ]

        # An adjustment and a transfer from the page, with keyboard only for the form.
        await mug_row.get_by_role("button", name=re.compile("^Adjust")).click()
        dialog = page.get_by_role("dialog")
        await expect(dialog).to_be_visible()
        await page.keyboard.type("5")
        await page.get_by_label("Reason").fill("delivery from supplier")
        await page.keyboard.press("Enter")
        await expect(dialog).to_be_hidden()
        await expect(mug_row.locator(".on_hand")).to_have_text("50")
        await mug_row.get_by_role("button", name=re.compile("^Transfer")).click()
        await page.get_by_label("To location").select_option(label="High Street store (ST-HIGH)")
        await page.get_by_label("Quantity").fill("7")
        await page.get_by_label("Reason").fill("restock the store")
        await page.get_by_role("button", name="Save").click()
        await expect(dialog).to_be_hidden()
        await expect(mug_row.locator(".on_hand")).to_have_text("43")
        # A refused change shows the server's reason in the dialog, and changes nothing.
        await mug_row.get_by_role("button", name=re.compile("^Transfer")).click()
        await page.get_by_label("Quantity").fill("1000")
        await page.get_by_label("Reason").fill("too many")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#stock-form-error")).not_to_be_empty()
        refused = [s for s in watched.statuses if s[0] == 409 and "/v1/stock/transfers" in s[1]]
        assert len(refused) == 1
        watched.statuses[:] = [s for s in watched.statuses if s not in refused]
        watched.console_errors[:] = [e for e in watched.console_errors if "409" not in e]
        await page.get_by_role("button", name="Cancel").click()
        # Every stock write carried the session's CSRF token and its own Idempotency-Key.
        stock_writes = [w for w in watched.writes if "/v1/stock/" in w[1]]
        assert len(stock_writes) == 3
        assert all(w[2].get("x-csrf-token") for w in stock_writes)
        keys = {w[2].get("idempotency-key") for w in stock_writes}
        assert None not in keys
        assert len(keys) == 3
        await page.get_by_label("Search SKU or name").fill("SKU-003")
        await page.get_by_label("Location", exact=True).select_option(
            label="High Street store (ST-HIGH)"
        )
        await expect(row(page, "SKU-003").locator(".on_hand")).to_have_text("7")
        async with ctx.db.engine.connect() as conn:
            movements = (
                await conn.execute(
                    text("SELECT count(*) FROM stock_movements WHERE product_id = :p"),
                    {"p": mug["id"]},
                )
            ).scalar_one()
        assert movements == 6  # receipt, +2, +3, +5, transfer out and in

        # Orders: customer's email, total, status; a new order appears live.
        await page.get_by_role("link", name="Orders").click()
        orders = page.locator("#orders tbody tr")
        await expect(orders).to_have_count(1)
        await expect(orders.first).to_contain_text(customer["email"])
        await expect(orders.first).to_contain_text("reserved")
        await expect(orders.first).to_contain_text("12.99")
        second_order = await place(client, customer["headers"], world["products"][1]["id"])
        await expect(orders).to_have_count(2)
        newest = page.locator(f'#orders tr[data-order-id="{second_order}"]')
        await expect(newest).to_contain_text(customer["email"])
        # Confirm, then fulfil the first; cancel the second. Live and from the page.
        oldest = page.locator(f'#orders tr[data-order-id="{first_order}"]')
        await oldest.get_by_role("button", name=re.compile("^Confirm")).click()
        await expect(oldest.locator(".status")).to_have_text("confirmed")
        await oldest.get_by_role("button", name=re.compile("^Fulfil")).click()
        await expect(oldest.locator(".status")).to_have_text("fulfilled")
        await expect(
            oldest.get_by_role("button", name=re.compile("^(Confirm|Cancel|Fulfil)"))
        ).to_have_count(0)
        await newest.get_by_role("button", name=re.compile("^Cancel")).click()
        await expect(newest.locator(".status")).to_have_text("cancelled")
        # The detail: lines by SKU and product name.
        await oldest.get_by_role("button", name=re.compile("^Open order")).click()
        detail = page.locator("#order-detail")
        await expect(detail).to_be_visible()
        await expect(detail).to_contain_text("SKU-000")
        await expect(detail).to_contain_text("Oak shelf 00")
        await expect(detail).to_contain_text("fulfilled")
        await screenshot(page, "console-orders")
        violations = await axe_violations(page)
        await page.get_by_role("link", name="Stock").click()
        violations += await axe_violations(page)

        # Staff see no admin panel and never asked for one; nothing was refused.
        await expect(page.get_by_role("link", name="Webhooks")).to_have_count(0)
        await expect(page.get_by_role("link", name="Operations")).to_be_visible()
        await page.get_by_role("link", name="Operations").click()
        await expect(page.locator("#ops-connections")).to_have_text(re.compile(r"^\d+ \("))
        assert not [url for _, url in watched.statuses if "/v1/webhooks" in url]
        assert watched.problems() == []
        assert violations == []
