"""The imports panel: a CSV upload followed to the end by a real worker run, its
progress, and the report of refused lines with their line numbers."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect
from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.worker import worker_options
from tests.e2e.console_support import axe_violations, chromium, open_console, screenshot, sign_in
from tests.live_support import serve

pytestmark = pytest.mark.e2e

CSV = (
    "sku,name,price_minor,currency\n"
    "IMP-1,Imported mug,990,EUR\n"
    "IMP-2,Imported lamp,2490,EUR\n"
    "broken line\n"
    "IMP-3,Imported chair,-5,EUR\n"
)


async def test_an_import_shows_progress_and_the_refused_lines(
    app: Any, ctx: AppContext, staff: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
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
    csv.write_text(CSV)
    async with jobs.open_async(), serve(app) as address, chromium() as browser:
        watched = await open_console(browser, address)
        page = watched.page
        await sign_in(watched, staff["email"])
        await page.get_by_role("link", name="Imports").click()
        await page.get_by_label("CSV file").set_input_files(str(csv))
        await page.get_by_role("button", name="Upload").click()
        await expect(page.locator("#import-job")).to_have_text(re.compile(r"^\d+$"))
        # The worker runs the job (in this process); the page follows it to the end.
        options = worker_options(runtime, "console-import")
        await jobs.run_worker_async(**{**options, "wait": False, "listen_notify": False})
        await expect(page.locator("#import-status")).to_contain_text("succeeded")
        await expect(page.locator("#import-status")).to_contain_text("2 imported")
        await expect(page.locator("#import-status")).to_contain_text("2 refused")
        await expect(page.locator("#import-progress")).to_have_attribute("value", "4")
        await expect(page.locator("#import-progress")).to_have_attribute("max", "4")
        refused = page.locator("#import-errors tbody tr")
        await expect(refused).to_have_count(2)
        await expect(refused.nth(0).locator("td").first).to_have_text("4")
        await expect(refused.nth(1).locator("td").first).to_have_text("5")
        await expect(refused.nth(1)).to_contain_text("price_minor")
        violations = await axe_violations(page)
        await screenshot(page, "console-import")
        assert watched.problems() == []
    assert violations == []
    async with ctx.db.engine.connect() as conn:
        names = (
            await conn.execute(
                text("SELECT name FROM products WHERE sku LIKE 'IMP-%' ORDER BY sku")
            )
        ).scalars()
        assert list(names) == ["Imported mug", "Imported lamp"]
