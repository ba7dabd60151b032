"""CSV import with stock columns: absolute `on_hand` per (SKU, location), written through
the ledger (adjustment rows + `stock.changed` events), so reconciliation stays clean and
re-importing the same file changes nothing. Runs `run_import` directly, as the worker's
task and `shelfwise import` do; the HTTP + worker path is in test_imports.py."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.imports.service import Summary, run_import
from shelfwise.reconciliation import reconcile_all
from tests.support import create_location, create_product, receive_stock, wait_until

HEADER = "sku,name,price_minor,currency,location,on_hand\n"


async def run(ctx: AppContext, tmp_path: Path, body: str, **options: Any) -> Summary:
    path = tmp_path / f"{uuid.uuid4().hex}.csv"
    path.write_text(body, encoding="utf-8")
    return await run_import(ctx.db.sessions, path, job_id=0, **options)


async def rows(ctx: AppContext, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with ctx.db.engine.connect() as conn:
        return [tuple(r) for r in await conn.execute(text(sql), params)]


async def count(ctx: AppContext, sql: str, **params: Any) -> int:
    [(n,)] = await rows(ctx, sql, **params)
    return int(n)


async def assert_reconciles(ctx: AppContext) -> None:
    async with ctx.db.sessions() as session:
        report = await reconcile_all(session)
    assert report.clean, report


LEVELS = """
    SELECT p.sku, l.code, s.on_hand, s.reserved FROM stock_levels s
    JOIN products p ON p.id = s.product_id JOIN locations l ON l.id = s.location_id
    ORDER BY p.sku, l.code
"""


@pytest.fixture
async def locations(client: httpx.AsyncClient, staff: dict[str, Any]) -> None:
    for code in ("NORTH", "SOUTH"):
        await create_location(client, staff["headers"], code=code)


@pytest.mark.parametrize("batch_size", [1000, 1])  # one transaction, or one per row
async def test_stock_is_loaded_through_the_ledger_and_reconciles(
    ctx: AppContext, tmp_path: Path, locations: None, batch_size: int
) -> None:
    body = (
        HEADER
        + "MUG-1,Mug,1299,EUR,NORTH,10\n"  # line 2
        + "MUG-1,Mug,1299,EUR,SOUTH,4\n"  # 3: same SKU, another location
        + "PLATE-1,Plate,899,EUR,,\n"  # 4: product only
        + "BOWL-1,Bowl,500,EUR,NORTH,0\n"  # 5: a level at zero, nothing to move
    )
    summary = await run(ctx, tmp_path, body, batch_size=batch_size)

    assert (summary.imported, summary.created, summary.bad) == (4, 3, 0)
    assert summary.stock_changed == 2
    assert await rows(ctx, LEVELS) == [
        ("BOWL-1", "NORTH", 0, 0),
        ("MUG-1", "NORTH", 10, 0),
        ("MUG-1", "SOUTH", 4, 0),
    ]
    ledger = await rows(
        ctx,
        "SELECT l.code, m.kind, m.on_hand_delta, m.reason, m.reference FROM stock_movements m"
        " JOIN locations l ON l.id = m.location_id ORDER BY l.code",
    )
    assert ledger == [
        ("NORTH", "adjustment", 10, "CSV import, line 2", "import:cli"),
        ("SOUTH", "adjustment", 4, "CSV import, line 3", "import:cli"),
    ]
    events = await rows(
        ctx,
        "SELECT payload->>'on_hand', payload->>'cause' FROM outbox_events"
        " WHERE type = 'stock.changed' ORDER BY (payload->>'on_hand')::int",
    )
    assert events == [("4", "import"), ("10", "import")]
    await assert_reconciles(ctx)


async def test_reimporting_the_same_file_changes_nothing_and_a_new_count_moves_the_difference(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    body = HEADER + "MUG-1,Mug,1299,EUR,NORTH,10\nMUG-1,Mug,1299,EUR,SOUTH,4\n"
    await run(ctx, tmp_path, body)
    before = {
        "movements": await count(ctx, "SELECT count(*) FROM stock_movements"),
        "events": await count(ctx, "SELECT count(*) FROM outbox_events"),
        "versions": await rows(ctx, "SELECT id, version FROM stock_levels ORDER BY id"),
        "product": await rows(ctx, "SELECT version FROM products"),
    }

    again = await run(ctx, tmp_path, body)

    assert (again.imported, again.created, again.updated, again.stock_changed) == (2, 0, 0, 0)
    after = {
        "movements": await count(ctx, "SELECT count(*) FROM stock_movements"),
        # Only the new import.progress event: no stock.changed, no product.updated.
        "events": await count(ctx, "SELECT count(*) FROM outbox_events") - 1,
        "versions": await rows(ctx, "SELECT id, version FROM stock_levels ORDER BY id"),
        "product": await rows(ctx, "SELECT version FROM products"),
    }
    assert after == before

    recount = await run(ctx, tmp_path, HEADER + "MUG-1,Mug,1299,EUR,NORTH,3\n")
    assert recount.stock_changed == 1
    assert await rows(ctx, LEVELS) == [("MUG-1", "NORTH", 3, 0), ("MUG-1", "SOUTH", 4, 0)]
    last = await rows(ctx, "SELECT on_hand_delta FROM stock_movements ORDER BY id DESC LIMIT 1")
    assert last == [(-7,)]
    await assert_reconciles(ctx)


async def test_bad_stock_rows_are_refused_whole_with_line_numbers_good_rows_kept(
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
    tmp_path: Path,
    locations: None,
) -> None:
    held = await create_product(client, staff["headers"], sku="HELD-1", name="Held")
    [(north,)] = await rows(ctx, "SELECT id FROM locations WHERE code = 'NORTH'")
    response = await receive_stock(client, staff["headers"], held["id"], str(north), 10)
    assert response.status_code == 201, response.text
    order = await client.post(
        "/v1/orders",
        json={"lines": [{"product_id": held["id"], "quantity": 6}]},
        headers={**customer["headers"], "Idempotency-Key": uuid.uuid4().hex},
    )
    assert order.status_code == 201, order.text

    body = (
        HEADER
        + "OK-1,Fine,100,EUR,NORTH,5\n"  # 2 ok
        + "NOWHERE-1,Lost,100,EUR,MOON,5\n"  # 3 unknown location
        + "NEG-1,Negative,100,EUR,NORTH,-2\n"  # 4 negative
        + "HALF-1,Half,100,EUR,NORTH,\n"  # 5 location without on_hand
        + "HELD-1,Renamed,100,EUR,NORTH,5\n"  # 6 below the 6 reserved
        + "HELD-1,Held,1299,EUR,SOUTH,2\n"  # 7 ok: another location
        + "OK-1,Fine,100,EUR,NORTH,9\n"  # 8 duplicate SKU and location
        + "OK-2,Fine too,100,EUR,SOUTH,1.5\n"  # 9 not a whole number
    )
    summary = await run(ctx, tmp_path, body, batch_size=3)

    assert (summary.imported, summary.bad) == (2, 6)
    errors = {e["line"]: e["error"] for e in summary.errors}
    assert sorted(errors) == [3, 4, 5, 6, 8, 9]
    assert "no location with code 'MOON'" in errors[3]
    assert "on_hand" in errors[4]
    assert "on_hand: required" in errors[5]
    assert "below the 6 units reserved" in errors[6]
    assert "duplicate SKU 'OK-1' at location 'NORTH'" in errors[8]
    skus = await rows(ctx, "SELECT sku, name FROM products ORDER BY sku")
    assert skus == [("HELD-1", "Held"), ("OK-1", "Fine")]  # refused rows wrote nothing
    assert await rows(ctx, LEVELS) == [
        ("HELD-1", "NORTH", 10, 6),
        ("HELD-1", "SOUTH", 2, 0),
        ("OK-1", "NORTH", 5, 0),
    ]
    await assert_reconciles(ctx)


async def test_stock_columns_need_the_stock_scope(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    with pytest.raises(ValueError, match="stock:write"):
        await run(ctx, tmp_path, HEADER + "MUG-1,Mug,1299,EUR,NORTH,10\n", stock_allowed=False)
    assert await count(ctx, "SELECT count(*) FROM products") == 0
    without_stock = await run(
        ctx, tmp_path, "sku,name,price_minor,currency\nMUG-1,Mug,1,EUR\n", stock_allowed=False
    )
    assert without_stock.imported == 1


async def test_a_header_with_half_the_stock_columns_is_refused(
    ctx: AppContext, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="location and on_hand"):
        await run(ctx, tmp_path, "sku,name,price_minor,currency,on_hand\nA,B,1,EUR,3\n")


async def test_the_delta_is_taken_under_the_level_lock(
    ctx: AppContext,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    tmp_path: Path,
    locations: None,
) -> None:
    """A writer holding the level when the import arrives: the import waits for it and
    moves the level from the count that writer committed, not from what it saw before."""
    product = await create_product(client, staff["headers"], sku="MUG-1", name="Mug")
    [(north,)] = await rows(ctx, "SELECT id FROM locations WHERE code = 'NORTH'")
    response = await receive_stock(client, staff["headers"], product["id"], str(north), 10)
    assert response.status_code == 201, response.text
    [(level_id,)] = await rows(ctx, "SELECT id FROM stock_levels")

    async with ctx.db.engine.connect() as holder:
        await holder.execute(
            text("SELECT 1 FROM stock_levels WHERE id = :id FOR UPDATE"), {"id": level_id}
        )
        importing = asyncio.create_task(
            run(
                ctx,
                tmp_path,
                "sku,name,price_minor,currency,location,on_hand\nMUG-1,Mug,1299,EUR,NORTH,3\n",
            )
        )

        async def import_waits_for_the_lock() -> bool:
            return (
                await count(
                    ctx,
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE OF s%'",
                )
                == 1
            )

        await wait_until(import_waits_for_the_lock, what="the import to wait on the level")
        await holder.execute(  # a receipt of 5, with its ledger row, as the API writes it
            text("UPDATE stock_levels SET on_hand = on_hand + 5 WHERE id = :id"), {"id": level_id}
        )
        await holder.execute(
            text(
                "INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind,"
                " on_hand_delta) SELECT id, product_id, location_id, 'receipt', 5"
                " FROM stock_levels WHERE id = :id"
            ),
            {"id": level_id},
        )
        await holder.commit()
        summary = await asyncio.wait_for(importing, timeout=30)

    assert summary.stock_changed == 1
    assert await rows(ctx, LEVELS) == [("MUG-1", "NORTH", 3, 0)]
    last = await rows(ctx, "SELECT on_hand_delta FROM stock_movements ORDER BY id DESC LIMIT 1")
    assert last == [(-12,)]  # from the 15 committed, not the 10 seen before the lock
    await assert_reconciles(ctx)


async def test_a_writer_between_two_batches_in_flight_is_not_left_waiting(
    ctx: AppContext, tmp_path: Path, locations: None
) -> None:
    """Batch 1 waits for a level a writer holds; batch 2, in flight beside it, holds its
    own level and waits (in Python) for batch 1's commit; the writer then asks for
    batch 2's level. PostgreSQL sees no cycle; batch 2 gives up its locks after
    `TURN_WAIT_S`, the writer and batch 1 go on, and batch 2 runs again after them."""
    await run(ctx, tmp_path, HEADER + "CYC-1,One,1,EUR,NORTH,5\nCYC-2,Two,1,EUR,NORTH,5\n")
    [(first,), (second,)] = await rows(
        ctx,
        "SELECT s.id FROM stock_levels s JOIN products p ON p.id = s.product_id ORDER BY p.sku",
    )
    lock = "SELECT 1 FROM stock_levels WHERE id = :id FOR UPDATE"

    async with ctx.db.engine.connect() as holder:
        await holder.execute(text(lock), {"id": first})
        importing = asyncio.create_task(
            run(
                ctx,
                tmp_path,
                HEADER + "CYC-1,One,1,EUR,NORTH,7\nCYC-2,Two,1,EUR,NORTH,8\n",
                batch_size=1,
            )
        )

        async def second_batch_holds_its_level() -> bool:
            await holder.execute(text("SAVEPOINT probe"))
            try:
                await holder.execute(text(lock + " NOWAIT"), {"id": second})
            except Exception:  # lock_not_available: batch 2 holds it
                await holder.execute(text("ROLLBACK TO SAVEPOINT probe"))
                return True
            await holder.execute(text("ROLLBACK TO SAVEPOINT probe"))
            return False

        await wait_until(second_batch_holds_its_level, what="batch 2 to lock its level")
        started = asyncio.get_running_loop().time()
        await holder.execute(text(lock), {"id": second})  # waits for batch 2 to let go
        assert asyncio.get_running_loop().time() - started < 10  # not the statement timeout
        await holder.commit()
        summary = await asyncio.wait_for(importing, timeout=30)

    assert summary.stock_changed == 2
    assert await rows(ctx, LEVELS) == [("CYC-1", "NORTH", 7, 0), ("CYC-2", "NORTH", 8, 0)]
    progress = await rows(
        ctx,
        "SELECT (payload->>'lines')::int FROM outbox_events"
        " WHERE type = 'import.progress' ORDER BY id",
    )
    assert progress[-3:] == [(1,), (2,), (2,)]  # in order, the last one says done
    await assert_reconciles(ctx)
