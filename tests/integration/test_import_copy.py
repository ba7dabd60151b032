"""CSV import through COPY and set-based merges (imports/staging.py, catalog/store.py,
inventory/store.py's staged SQL): line numbers survive the COPY path, the SQL check
agrees with `check_row`, duplicates, ledger receipts, idempotent re-import, payloads
equal to the Python builders', and no staging table is left behind."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shelfwise.catalog.models import Product
from shelfwise.context import AppContext
from shelfwise.events.payloads import product_payload, stock_changed_event
from shelfwise.imports.parser import CELLS, check_row
from shelfwise.imports.service import Summary, run_import
from shelfwise.imports.staging import CANONICAL
from shelfwise.reconciliation import reconcile_all
from tests.support import create_location

HEADER = "sku,name,category,price_minor,currency,description,location,on_hand\n"


async def run(ctx: AppContext, tmp_path: Path, body: str, **options: Any) -> Summary:
    path = tmp_path / f"{uuid.uuid4().hex}.csv"
    path.write_text(body, encoding="utf-8", newline="")
    return await run_import(ctx.db.sessions, path, job_id=0, **options)


async def rows(ctx: AppContext, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with ctx.db.engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


async def count(ctx: AppContext, sql: str, **params: Any) -> int:
    [(n,)] = await rows(ctx, sql, **params)
    return int(n)


async def staging_tables(ctx: AppContext) -> int:
    return await count(ctx, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'import\\_%'")


@pytest.fixture
async def locations(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    for code in ("NORTH", "SOUTH"):
        await create_location(client, staff["headers"], code=code)


async def test_line_numbers_survive_the_copy_path_and_odd_but_valid_cells_are_normalised(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    body = (
        HEADER  # 1
        + 'A-1,"Mug\nwith a\nlong name",kitchen,100,EUR,,NORTH,5\n'  # 2-4: ends on line 4
        + "\n"  # 5 blank: skipped, still counted as a line
        + "A-2,Plate,kitchen,abc,EUR,,,\n"  # 6 bad price
        + "A-3,Bowl,kitchen,1,EUR\n"  # 7 too few fields
        + " A-4 ,  Spoon  ,, 0012 ,EUR,  padded  ,SOUTH, 007 \n"  # 8 valid, normalised
        + 'A-5,Fork,kitchen,1,EUR,"x",MOON,1\n'  # 9 unknown location
        + "A-6,Knife,kitchen,1,EUR,,NORTH,1.5\n"  # 10 on_hand not whole
        + "A-7,Cup,kitchen,1,eur,,,\n"  # 11 currency lower case
    )
    summary = await run(ctx, tmp_path, body, batch_size=2)

    assert (summary.imported, summary.bad) == (2, 5)
    errors = {e["line"]: e["error"] for e in summary.errors}
    assert sorted(errors) == [6, 7, 9, 10, 11]
    assert errors[6] == check_row(
        dict(zip(CELLS, ["A-2", "Plate", "kitchen", "abc", "EUR"], strict=False))
    )
    assert errors[7] == "expected 8 fields, found 5"
    assert errors[9] == "location: no location with code 'MOON'"
    assert errors[10].startswith("on_hand: a whole number")
    assert errors[11].startswith("currency:")
    assert await rows(
        ctx, "SELECT sku, name, category, price_minor, description FROM products ORDER BY sku"
    ) == [
        ("A-1", "Mug\nwith a\nlong name", "kitchen", 100, ""),
        ("A-4", "Spoon", "general", 12, "padded"),
    ]
    reasons = await rows(ctx, "SELECT reason, on_hand_delta FROM stock_movements ORDER BY reason")
    assert reasons == [("CSV import, line 4", 5), ("CSV import, line 8", 7)]
    assert await staging_tables(ctx) == 0


async def test_a_mid_file_invalid_row_is_refused_alone_and_batches_around_it_commit(
    ctx: AppContext, tmp_path: Path
) -> None:
    lines = [f"MID-{n:04d},Product {n},general,{n},EUR,,,\n" for n in range(1, 51)]
    lines[24] = "MID-0025,Product 25,general,-3,EUR,,,\n"  # file line 26
    lines[30] = "MID-0031,Bad\x00name,general,1,EUR,,,\n"  # file line 32: NUL (COPY can't)
    summary = await run(ctx, tmp_path, HEADER + "".join(lines), batch_size=10)

    assert (summary.lines, summary.imported, summary.bad) == (50, 48, 2)
    assert [e["line"] for e in summary.errors] == [26, 32]
    assert summary.errors[0]["error"].startswith("price_minor:")
    assert "NUL" in summary.errors[1]["error"]
    assert await count(ctx, "SELECT count(*) FROM products") == 48
    progress = await count(ctx, "SELECT count(*) FROM outbox_events WHERE type = 'import.progress'")
    assert progress == 50 // 10 + 1  # one per batch of 10 records, the last says done


async def test_duplicate_rows_in_one_file(ctx: AppContext, tmp_path: Path, locations: None) -> None:
    body = (
        HEADER
        + "DUP-1,First,general,100,EUR,,,\n"  # 2 kept
        + "DUP-1,Second,general,200,EUR,,,\n"  # 3 duplicate SKU
        + "DUP-2,Mug,general,300,EUR,,NORTH,4\n"  # 4 kept
        + "DUP-2,Mug renamed,general,350,EUR,,SOUTH,2\n"  # 5 kept: another location; wins
        + "DUP-2,Mug,general,300,EUR,,NORTH,9\n"  # 6 duplicate SKU and location
        + "DUP-3,Bad,general,x,EUR,,,\n"  # 7 invalid: does not take the key
        + "DUP-3,Good,general,1,EUR,,,\n"  # 8 kept
    )
    summary = await run(ctx, tmp_path, body, batch_size=3)

    assert (summary.imported, summary.created, summary.bad) == (4, 3, 3)
    errors = {e["line"]: e["error"] for e in summary.errors}
    assert errors[3] == "duplicate SKU 'DUP-1' in this file"
    assert errors[6] == "duplicate SKU 'DUP-2' at location 'NORTH' in this file"
    assert sorted(errors) == [3, 6, 7]
    products = await rows(ctx, "SELECT sku, name, price_minor FROM products ORDER BY sku")
    assert products == [
        ("DUP-1", "First", 100),
        ("DUP-2", "Mug renamed", 350),
        ("DUP-3", "Good", 1),
    ]
    levels = await rows(
        ctx,
        "SELECT l.code, s.on_hand FROM stock_levels s JOIN locations l ON l.id = s.location_id"
        " ORDER BY l.code",
    )
    assert levels == [("NORTH", 4), ("SOUTH", 2)]


async def test_ledger_receipts_one_per_changed_level_and_payloads_match_the_builders(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    body = HEADER + "".join(
        f"LED-{n:03d},Item {n},general,{n},EUR,,{'NORTH' if n % 2 else 'SOUTH'},{n % 7}\n"
        for n in range(1, 101)
    )
    summary = await run(ctx, tmp_path, body, batch_size=40)

    moved = sum(1 for n in range(1, 101) if n % 7)  # a target of 0 moves nothing
    assert (summary.imported, summary.stock_changed) == (100, moved)
    assert await count(ctx, "SELECT count(*) FROM stock_levels") == 100
    ledger = await rows(
        ctx, "SELECT kind, count(*), sum(on_hand_delta) FROM stock_movements GROUP BY kind"
    )
    assert ledger == [("adjustment", moved, sum(n % 7 for n in range(1, 101)))]
    assert await count(ctx, "SELECT count(*) FROM outbox_events WHERE type = 'stock.changed'") == (
        moved
    )
    async with ctx.db.sessions() as session:
        report = await reconcile_all(session)
    assert report.clean, report

    # The SQL-built payloads equal what the Python builders make of the same rows.
    [(payload, product_id)] = await rows(
        ctx,
        "SELECT e.payload, p.id FROM outbox_events e JOIN products p ON p.id::text ="
        " e.aggregate_id WHERE e.type = 'product.created' AND p.sku = 'LED-001'",
    )
    async with ctx.db.sessions() as session:
        product = await session.get(Product, product_id)
        assert product is not None
        assert payload == product_payload(product)
    [(payload, level_id, pid, lid, on_hand, reserved, version)] = await rows(
        ctx,
        "SELECT e.payload, s.id, s.product_id, s.location_id, s.on_hand, s.reserved, s.version"
        " FROM outbox_events e JOIN stock_levels s ON s.id::text = e.aggregate_id"
        " WHERE e.type = 'stock.changed' ORDER BY s.id LIMIT 1",
    )
    expected = stock_changed_event(
        stock_level_id=level_id,
        product_id=pid,
        location_id=lid,
        on_hand=on_hand,
        reserved=reserved,
        level_version=version,
        cause="import",
        reference="import:cli",
    )
    assert payload == expected.payload


async def test_reimporting_a_file_is_idempotent(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    body = HEADER + "".join(
        f"IDEM-{n:04d},Item {n},general,{n},EUR,desc {n},NORTH,{n % 5}\n" for n in range(1, 301)
    )
    first = await run(ctx, tmp_path, body, batch_size=100)
    assert (first.created, first.bad) == (300, 0)
    snapshot = """
        SELECT (SELECT count(*) FROM stock_movements), (SELECT sum(version) FROM products),
               (SELECT sum(version) FROM stock_levels),
               (SELECT count(*) FROM outbox_events WHERE type <> 'import.progress')
    """
    before = await rows(ctx, snapshot)

    again = await run(ctx, tmp_path, body, batch_size=100)

    assert (again.imported, again.created, again.updated, again.stock_changed) == (300, 0, 0, 0)
    assert await rows(ctx, snapshot) == before
    assert await staging_tables(ctx) == 0


async def test_a_batch_that_fails_mid_import_keeps_the_batches_before_it_and_none_after(
    ctx: AppContext, tmp_path: Path
) -> None:
    """Two batches are in flight at once (`run_import`): when one fails, the one after it,
    already writing, rolls back at its turn instead of committing; the ones before it
    stay, with their progress events, in order."""
    async with ctx.db.engine.begin() as conn:  # this test database only
        await conn.execute(
            text(
                "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$"
                " BEGIN IF NEW.sku = 'FAIL-0035' THEN RAISE EXCEPTION 'boom'; END IF;"
                " RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON products"
                " FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
            )
        )
    body = HEADER + "".join(f"FAIL-{n:04d},Item {n},general,{n},EUR,,,\n" for n in range(1, 81))

    with pytest.raises(Exception, match="boom"):
        await run(ctx, tmp_path, body, batch_size=10)

    # Batches 1-3 (records 1-30) committed; the 4th failed, the 5th rolled back.
    assert await count(ctx, "SELECT count(*) FROM products") == 30
    assert await count(ctx, "SELECT max(sku) = 'FAIL-0030' FROM products") == 1
    progress = await rows(
        ctx,
        "SELECT (payload->>'lines')::int FROM outbox_events"
        " WHERE type = 'import.progress' ORDER BY id",
    )
    assert progress == [(10,), (20,), (30,)]
    assert await staging_tables(ctx) == 0


async def test_skus_across_batches_and_new_locations_of_existing_products(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    """A product stocked in two locations whose rows straddle a batch boundary (its
    batches do not overlap), and an existing product stocked at a new location: the
    level is created at its target, one ledger row, `level_version` 1."""
    first = HEADER + "OLD-1,Old,general,5,EUR,,NORTH,4\n"
    await run(ctx, tmp_path, first)
    body = HEADER + "".join(
        f"SPLIT-{n:03d},Split {n},general,{n},EUR,,NORTH,{n}\n"
        f"SPLIT-{n:03d},Split {n},general,{n},EUR,,SOUTH,{n + 1}\n"
        for n in range(1, 16)
    )
    body += "OLD-1,Old,general,5,EUR,,SOUTH,7\n"

    summary = await run(ctx, tmp_path, body, batch_size=3)

    assert (summary.imported, summary.created, summary.bad) == (31, 15, 0)
    assert summary.stock_changed == 31
    assert await count(ctx, "SELECT count(*) FROM stock_levels") == 32
    assert await rows(
        ctx,
        "SELECT s.on_hand, s.version, count(m.id) FROM stock_levels AS s"
        " JOIN products AS p ON p.id = s.product_id JOIN locations AS l ON l.id = s.location_id"
        " JOIN stock_movements AS m ON m.stock_level_id = s.id"
        " WHERE p.sku = 'OLD-1' AND l.code = 'SOUTH' GROUP BY s.id",
    ) == [(7, 1, 1)]
    versions = await rows(
        ctx,
        "SELECT DISTINCT (payload->>'level_version')::int FROM outbox_events"
        " WHERE type = 'stock.changed'",
    )
    assert versions == [(1,)]
    progress = await rows(
        ctx,
        "SELECT (payload->>'lines')::int FROM outbox_events"
        " WHERE type = 'import.progress' ORDER BY id",
    )
    assert progress[-11:] == [(n,) for n in range(3, 31, 3)] + [(31,)]
    async with ctx.db.sessions() as session:
        assert (await reconcile_all(session)).clean


async def test_a_failed_file_leaves_no_staging_table_and_nothing_imported(
    ctx: AppContext, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        (HEADER + "OK-1,Fine,general,1,EUR,,,\n" * 3 + "CAFE-1,Café,general,1,EUR,,,\n").encode(
            "latin-1"
        )
    )
    with pytest.raises(ValueError, match="not UTF-8"):
        await run_import(ctx.db.sessions, path, job_id=0)
    assert await count(ctx, "SELECT count(*) FROM products") == 0
    assert await staging_tables(ctx) == 0


TRICKY = [
    ["S-1", "Name", "", "1", "EUR", "", "", ""],
    ["S-1", " Name", "", "1", "EUR", "", "", ""],
    ["S-1", "Name\u00a0", "", "1", "EUR", "", "", ""],
    ["S-1", "Name\u2003", "", "1", "EUR", "", "", ""],
    ["S-1", "Name\x1f", "", "1", "EUR", "", "", ""],
    ["S-1", "N" * 200, "", "1", "EUR", "", "", ""],
    ["S-1", "N" * 201, "", "1", "EUR", "", "", ""],
    ["S-1", "Émile", "", "1", "EUR", "", "", ""],
    ["s" * 64, "Name", "", "1", "EUR", "", "", ""],
    ["s" * 65, "Name", "", "1", "EUR", "", "", ""],
    ["-S", "Name", "", "1", "EUR", "", "", ""],
    ["S-1", "Name", "cat ", "1", "EUR", "", "", ""],
    ["S-1", "Name", "cat_", "1", "EUR", "", "", ""],
    ["S-1", "Name", "Cat", "1", "EUR", "", "", ""],
    ["S-1", "Name", "", "2147483647", "EUR", "", "", ""],
    ["S-1", "Name", "", "2147483648", "EUR", "", "", ""],
    ["S-1", "Name", "", "01", "EUR", "", "", ""],
    ["S-1", "Name", "", "+1", "EUR", "", "", ""],
    ["S-1", "Name", "", "1.0", "EUR", "", "", ""],
    ["S-1", "Name", "", "1", "EURO", "", "", ""],
    ["S-1", "Name", "", "1", "EUR", "d" * 5000, "", ""],
    ["S-1", "Name", "", "1", "EUR", "d" * 5001, "", ""],
    ["S-1", "Name", "", "1", "EUR", "", "NORTH", "1000000000"],
    ["S-1", "Name", "", "1", "EUR", "", "NORTH", "1000000001"],
    ["S-1", "Name", "", "1", "EUR", "", "NORTH", ""],
    ["S-1", "Name", "", "1", "EUR", "", "", "3"],
    ["S-1", "Name", "", "1", "EUR", "", "NORTH", "-1"],
    ["S-1", "Name", "", "1", "EUR", "", "NO RTH", "1"],
]


async def test_the_sql_check_accepts_only_what_check_row_accepts_unchanged(
    ctx: AppContext,
) -> None:
    """`CANONICAL` is a strict subset of `check_row`: whatever it accepts, `check_row`
    accepts with the very same values, so casting the cells as they are is safe."""
    async with ctx.db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        verdicts: list[bool] = []
        for cells in TRICKY:
            values = [c or None for c in cells]
            columns = ", ".join(f"%s::text AS {c}" for c in CELLS)
            cur = await driver.execute(
                f"SELECT {CANONICAL} FROM (SELECT NULL::text AS error, {columns}) AS r",
                values,
            )
            [(canonical,)] = await cur.fetchall()
            verdicts.append(canonical)
    for cells, canonical in zip(TRICKY, verdicts, strict=True):
        if canonical:
            checked = check_row(dict(zip(CELLS, cells, strict=True)))
            assert not isinstance(checked, str), (cells, checked)
            got = [
                checked.sku,
                checked.name,
                checked.category,
                str(checked.price_minor),
                checked.currency,
                checked.description,
                checked.location or "",
                "" if checked.on_hand is None else str(checked.on_hand),
            ]
            assert got == [c if c or i != 2 else "general" for i, c in enumerate(cells)], cells
    assert sum(verdicts) >= 8  # the plain rows do take the fast path
