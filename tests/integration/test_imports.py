"""CSV import: streamed upload → 202 + job; a real in-process worker parses (in a thread)
and upserts in batches; bad rows reported with line numbers, good rows kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from procrastinate import App
from sqlalchemy import text

from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.worker import worker_options
from tests.support import create_location, create_product

LIMIT = 2 * 1024 * 1024


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path, "import_max_bytes": LIMIT})


async def drain(app: App, runtime: JobRuntime) -> None:
    options = worker_options(runtime, "drain")
    await app.run_worker_async(**{**options, "wait": False, "listen_notify": False})


async def start(client: httpx.AsyncClient, headers: dict[str, str], body: Any) -> dict[str, Any]:
    response = await client.post(
        "/v1/imports", content=body, headers={**headers, "Content-Type": "text/csv"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return dict(response.json())


async def job(client: httpx.AsyncClient, headers: dict[str, str], job_id: int) -> dict[str, Any]:
    response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def scalar(ctx: AppContext, sql: str, **params: Any) -> Any:
    async with ctx.db.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def test_good_rows_kept_bad_rows_reported_with_line_numbers(
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    job_app: App,
    runtime: JobRuntime,
    settings: Settings,
) -> None:
    existing = await create_product(client, staff["headers"], sku="EXIST-1", price_minor=100)
    csv_text = (
        "sku,name,category,price_minor,currency,description\n"  # line 1
        "IMP-1,Mug,kitchen,1299,EUR,A mug\n"  # 2 ok
        'IMP-2,"Plate, large",kitchen,899,EUR,"multi\nline"\n'  # 3-4 ok (quoted)
        "IMP-3,Bowl,kitchen,abc,EUR,\n"  # 5 bad price
        "IMP-4,Cup,kitchen,500\n"  # 6 too few fields
        "IMP-1,Mug again,kitchen,1,EUR,\n"  # 7 duplicate SKU in the file
        "IMP-5,Spoon,kitchen,100,euro,\n"  # 8 bad currency
        "\n"  # 9 blank: skipped
        "EXIST-1,Renamed,kitchen,250,EUR,\n"  # 10 updates the existing product
        "bad sku!,Fork,kitchen,1,EUR,\n"  # 11 bad SKU
    )
    started = await start(client, staff["headers"], csv_text.encode())
    assert started["status"] == "todo"
    assert started["task"] == "import_products"
    await drain(job_app, runtime)

    done = await job(client, staff["headers"], started["id"])
    assert done["status"] == "succeeded"
    report = json.loads(done["progress"]["message"])
    assert (report["imported"], report["created"], report["bad"]) == (3, 2, 5)
    assert [e["line"] for e in report["errors"]] == [5, 6, 7, 8, 11]
    assert "price_minor" in report["errors"][0]["error"]
    assert "duplicate SKU" in report["errors"][2]["error"]
    skus = await scalar(ctx, "SELECT string_agg(sku, ',' ORDER BY sku) FROM products")
    assert skus == "EXIST-1,IMP-1,IMP-2"
    renamed = await scalar(
        ctx,
        "SELECT name || ':' || price_minor || ':' || version FROM products WHERE id = :id",
        id=existing["id"],
    )
    assert renamed == "Renamed:250:2"
    assert (
        await scalar(ctx, "SELECT description FROM products WHERE sku = 'IMP-2'") == "multi\nline"
    )
    events = await scalar(ctx, "SELECT count(*) FROM outbox_events WHERE type = 'import.progress'")
    assert events == 1
    created = await scalar(ctx, "SELECT count(*) FROM outbox_events WHERE type = 'product.created'")
    assert created == 3  # EXIST-1 through the API, IMP-1 and IMP-2 by the import
    assert list((settings.data_dir / "imports").glob("*.csv")) == []  # removed when done


async def test_stock_columns_through_the_api_and_the_worker(
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    job_app: App,
    runtime: JobRuntime,
) -> None:
    await create_location(client, staff["headers"], code="NORTH")
    body = b"sku,name,price_minor,currency,location,on_hand\nMUG-1,Mug,1299,EUR,NORTH,7\n"
    started = await start(client, staff["headers"], body)
    assert started["args"]["stock_allowed"] is True
    await drain(job_app, runtime)

    done = await job(client, staff["headers"], started["id"])
    assert done["status"] == "succeeded", done
    report = json.loads(done["progress"]["message"])
    assert (report["imported"], report["stock_changed"], report["bad"]) == (1, 1, 0)
    movement = await scalar(
        ctx,
        "SELECT on_hand_delta || ':' || reference || ':' || actor_id FROM stock_movements",
    )
    assert movement == f"7:import:{started['id']}:{staff['id']}"


async def test_wrong_encoding_fails_the_job_with_a_reason(
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    job_app: App,
    runtime: JobRuntime,
) -> None:
    body = "sku,name,price_minor,currency\nCAFE-1,Café crème,350,EUR\n".encode("latin-1")
    started = await start(client, staff["headers"], body)
    await drain(job_app, runtime)
    done = await job(client, staff["headers"], started["id"])
    assert done["status"] == "failed"
    assert "not UTF-8" in done["progress"]["message"]
    assert await scalar(ctx, "SELECT count(*) FROM products") == 0


async def test_missing_header_columns_fail_the_job(
    client: httpx.AsyncClient, staff: dict[str, Any], job_app: App, runtime: JobRuntime
) -> None:
    started = await start(client, staff["headers"], b"sku,title\nA,B\n")
    await drain(job_app, runtime)
    done = await job(client, staff["headers"], started["id"])
    assert done["status"] == "failed"
    assert "lacks name, price_minor, currency" in done["progress"]["message"]


async def body_chunks(lines: int) -> AsyncIterator[bytes]:
    yield b"sku,name,category,price_minor,currency,description\n"
    for start in range(0, lines, 1000):
        yield "".join(
            f"BULK-{n:06d},Bulk product {n},bulk,{n % 5000},EUR,row {n} of the big file\n"
            for n in range(start, min(start + 1000, lines))
        ).encode()


async def test_a_larger_file_streamed_past_the_global_body_limit(
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    job_app: App,
    runtime: JobRuntime,
) -> None:
    rows = 25_000  # ~1.6 MB: over the global 1 MiB limit, under the import limit
    started = await start(client, staff["headers"], body_chunks(rows))
    await drain(job_app, runtime)
    done = await job(client, staff["headers"], started["id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == rows
    assert done["progress"]["total"] == rows
    assert json.loads(done["progress"]["message"])["imported"] == rows
    assert await scalar(ctx, "SELECT count(*) FROM products WHERE category = 'bulk'") == rows
    progress = await scalar(
        ctx, "SELECT count(*) FROM outbox_events WHERE type = 'import.progress'"
    )
    assert progress == rows // 1000 + 1  # one per batch, the last one says done


async def test_too_large_upload_is_413_and_leaves_nothing(
    client: httpx.AsyncClient, staff: dict[str, Any], settings: Settings, ctx: AppContext
) -> None:
    response = await client.post(
        "/v1/imports",
        content=body_chunks(40_000),
        headers={**staff["headers"], "Content-Type": "text/csv"},
    )
    assert response.status_code == 413, response.text
    leftovers = [p for p in (settings.data_dir / "imports").rglob("*") if p.is_file()]
    assert leftovers == []
    assert await scalar(ctx, "SELECT count(*) FROM procrastinate_jobs") == 0


def test_cli_import_with_progress_bar(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from typer.testing import CliRunner

    from shelfwise.cli import app as cli

    csv_file = tmp_path / "products.csv"
    csv_file.write_text(
        "sku,name,price_minor,currency\nCLI-1,One,100,EUR\nCLI-2,Two,x,EUR\nCLI-3,Three,300,EUR\n"
    )
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SHELFWISE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["import", str(csv_file)])
    assert result.exit_code == 1, result.output  # one row refused
    assert "line 3" in result.output
    assert "2 rows imported (2 new), 1 refused" in result.output
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT string_agg(sku, ',' ORDER BY sku) FROM products").fetchone()
    assert row is not None
    assert row[0] == "CLI-1,CLI-3"
