"""Helpers for the staff-console browser tests: Debian's Chromium driven by Playwright.

Every page records what a user would never want to see: console errors, uncaught
exceptions, requests that failed or answered 4xx/5xx. Tests assert those lists are empty
(or hold exactly what the test provoked). Accessibility is checked with axe-core, read
from node_modules (npm ci) and evaluated through the DevTools protocol, which the page's
CSP does not govern, so the page is tested under its real policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Request, Response, async_playwright, expect

from tests.support import PASSWORD, require_binary

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
# Long-lived streams cut by the test itself or by closing the page are not failures.
LIVE_PATHS = ("/v1/stream", "/v1/poll")


@dataclass
class Watched:
    page: Page
    base: str
    console_errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    statuses: list[tuple[int, str]] = field(default_factory=list)
    writes: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def problems(self) -> list[str]:
        refused = [f"{status} {url}" for status, url in self.statuses if status >= 400]
        return self.console_errors + self.failed + refused


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = require_binary("chromium")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_console(
    browser: Browser, address: str, *, width: int = 1280, height: int = 900
) -> Watched:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    watched = Watched(page, f"http://{address}")

    def on_console(message: Any) -> None:
        if message.type == "error":
            watched.console_errors.append(f"console: {message.text}")

    def on_failed(request: Request) -> None:
        failure = request.failure or ""
        if any(path in request.url for path in LIVE_PATHS) and "ERR_ABORTED" in failure:
            return
        watched.failed.append(f"failed: {request.method} {request.url} {failure}")

    def on_response(response: Response) -> None:
        watched.statuses.append((response.status, f"{response.request.method} {response.url}"))

    page.on("console", on_console)
    page.on("pageerror", lambda error: watched.console_errors.append(f"pageerror: {error}"))
    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.on(
        "request",
        lambda r: (
            watched.writes.append((r.method, r.url, r.headers)) if r.method != "GET" else None
        ),
    )
    await page.goto(watched.base + "/")
    return watched


async def sign_in(watched: Watched, email: str) -> None:
    page = watched.page
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#who-email")).to_have_text(email)


async def axe_violations(page: Page) -> list[str]:
    """Serious and critical axe-core violations on the page as it is now."""
    if not AXE.exists():
        reason = f"{AXE} is missing (run npm ci)"
        if os.environ.get("SHELFWISE_TEST_REQUIRE") == "all":
            pytest.fail(reason + " and SHELFWISE_TEST_REQUIRE=all")
        pytest.skip(reason)
    await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;0")
    result = await page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
        "v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))})))"
    )
    return [
        f"{v['impact']}: {v['id']} at {v['nodes'][:3]}"
        for v in result
        if v["impact"] in ("serious", "critical")
    ]


async def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
