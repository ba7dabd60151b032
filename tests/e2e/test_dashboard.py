"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

The app is served by uvicorn in the test's event loop (tests/live_support.serve) with a
relay publishing the outbox, so a change made through the API reaches the page over the
real SSE stream. The browser is the system `chromium` (never `playwright install`).

Secure `__Host-` cookies over plain http: Chromium treats http://127.0.0.1 as a secure
context and stores Secure cookies from it, so the production cookie settings are used
unchanged (asserted below).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import ConsoleMessage, Page, Route, async_playwright, expect
from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.worker import worker_options
from tests.live_support import running_relay, serve, settle
from tests.support import PASSWORD, create_location, create_product, receive_stock, require_binary

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-artifacts" / "dashboard.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_PATHS = ("**/v1/stream*", "**/v1/poll*")
TIMEOUT_MS = 15_000


async def adjust(client: httpx.AsyncClient, headers: dict[str, str], *ids: str, n: int) -> None:
    response = await receive_stock(client, headers, ids[0], ids[1], n)
    assert response.status_code == 201, response.text


async def refuse(route: Route) -> None:
    await route.abort("connectionrefused")


def on_hand(page: Page, level_id: int) -> Any:
    return page.locator(f'#stock tr[data-level-id="{level_id}"] [data-field="on_hand"]')


async def test_dashboard_updates_live_and_resumes_after_a_dropped_connection(
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    app: Any,
    ctx: AppContext,
    database_url: str,
) -> None:
    chromium = require_binary("chromium")
    headers = staff["headers"]
    product = await create_product(client, headers)
    location = await create_location(client, headers)
    ids = (product["id"], location["id"])
    await adjust(client, headers, *ids, n=5)
    levels = await client.get("/v1/stock", params={"product_id": product["id"]}, headers=headers)
    [level] = levels.json()["data"]

    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    async with running_relay(database_url), serve(app) as address, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", console)
            page.on("pageerror", lambda error: problems.append(str(error)))
            state = page.locator("#connection")

            await page.goto(f"http://{address}/")
            await expect(state).to_have_attribute("data-state", "idle")
            await page.get_by_label("Email").fill(staff["email"])
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()

            # The session cookie was accepted over http://127.0.0.1 (a secure context).
            await expect(page.locator("#dashboard")).to_be_visible()
            cookies = {c["name"]: c for c in await page.context.cookies()}
            assert cookies["__Host-session"]["secure"]
            assert cookies["__Host-session"]["httpOnly"]

            # Snapshot, then live over SSE.
            await expect(on_hand(page, level["id"])).to_have_text("5")
            await expect(state).to_have_attribute("data-state", "live")
            await adjust(client, headers, *ids, n=2)
            await expect(on_hand(page, level["id"])).to_have_text("7")

            # Drop the connection: new streams and polls are refused, open streams are
            # closed by the server. A change is made while the page is disconnected.
            for pattern in LIVE_PATHS:
                await page.route(pattern, refuse)
            assert ctx.hub is not None
            for subscription in list(ctx.hub._subscriptions):
                subscription.close("slow_consumer")
            await expect(state).to_have_attribute("data-state", "reconnecting")
            await adjust(client, headers, *ids, n=3)
            await settle(ctx)
            await expect(on_hand(page, level["id"])).to_have_text("7")

            # Back online: the page resumes from its last position and gets the change.
            for pattern in LIVE_PATHS:
                await page.unroute(pattern)
            await expect(on_hand(page, level["id"])).to_have_text("10")
            await expect(state).to_have_attribute("data-state", re.compile(r"^(live|polling)$"))
            await expect(page.locator("#ops-connections")).to_have_text(re.compile(r"^\d+ \("))

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert problems == []


async def test_admins_see_the_webhook_delivery_log_and_staff_do_not(
    app: Any, admin: dict[str, Any], staff: dict[str, Any]
) -> None:
    chromium = require_binary("chromium")
    async with serve(app) as address, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            for user, sees_log in ((admin, True), (staff, False)):
                page = await (await browser.new_context()).new_page()
                page.set_default_timeout(TIMEOUT_MS)
                await page.goto(f"http://{address}/")
                await page.get_by_label("Email").fill(user["email"])
                await page.get_by_label("Password").fill(PASSWORD)
                await page.get_by_role("button", name="Sign in").click()
                # The ops panel has loaded: the webhook panel's fate is decided with it.
                await expect(page.locator("#ops-queue")).to_have_text(re.compile(r"^\d+$"))
                panel = page.locator("#webhooks-panel")
                if sees_log:
                    await expect(panel).to_be_visible()
                    await expect(page.locator("#webhooks-empty")).to_be_visible()
                else:
                    await expect(panel).to_be_hidden()
                await page.context.close()
        finally:
            await browser.close()


async def test_import_page_uploads_a_csv_and_shows_the_job_finish(
    app: Any, ctx: AppContext, staff: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    chromium = require_binary("chromium")
    runtime = JobRuntime(
        settings=ctx.settings.model_copy(update={"worker_concurrency": 1}),
        db=ctx.db,
        clock=ctx.clock,
        alerts=Alerts(None),
    )
    jobs = build_job_app(
        runtime.settings,
        database_url,
        clock=runtime.clock,
        rng=random.Random(7),
        pool_size=2,
        periodic_tasks=(),
    )
    csv = tmp_path / "products.csv"
    csv.write_text(
        "sku,name,price_minor,currency\nIMP-1,Imported mug,990,EUR\n"
        "IMP-2,Imported lamp,2490,EUR\nbroken line\n"
    )
    async with jobs.open_async(), serve(app) as address, async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await (await browser.new_context()).new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(f"http://{address}/")
            await page.get_by_label("Email").fill(staff["email"])
            await page.get_by_label("Password").fill(PASSWORD)
            await page.get_by_role("button", name="Sign in").click()
            await page.locator("#import-file").set_input_files(str(csv))
            await page.get_by_role("button", name="Upload").click()
            await expect(page.locator("#import-job")).to_have_text(re.compile(r"^\d+$"))
            # The worker runs the job (in this process); the page follows it to the end.
            options = worker_options(runtime, "dashboard-import")
            await jobs.run_worker_async(**{**options, "wait": False, "listen_notify": False})
            await expect(page.locator("#import-status")).to_contain_text("succeeded")
            await expect(page.locator("#import-progress")).to_be_visible()
        finally:
            await browser.close()
    async with ctx.db.engine.connect() as conn:
        names = (
            (
                await conn.execute(
                    text("SELECT name FROM products WHERE sku LIKE 'IMP-%' ORDER BY sku")
                )
            )
            .scalars()
            .all()
        )
    assert names == ["Imported mug", "Imported lamp"]
