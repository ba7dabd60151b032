"""Order lines and ledger rows reference their level by (id, product_id, location_id).

One composite foreign key per table replaces three single-column ones (migration 0011,
docs/decisions/0046): a row may only name its level's own product and location, and a
product or a location with stock history still cannot be deleted (its levels hold it)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from shelfwise.context import AppContext
from tests.support import create_location, create_product, receive_stock

LEDGER_ROW = """
INSERT INTO stock_movements (stock_level_id, product_id, location_id, kind, on_hand_delta,
                             reason)
SELECT s.id, {product}, {location}, 'adjustment', 1, 'test'
  FROM stock_levels AS s WHERE s.product_id = :product AND s.location_id = :location
"""
ORDER_LINE = """
WITH o AS (
    INSERT INTO orders (status, currency, total_minor, expires_at, placed_by_user_id)
    SELECT 'reserved', 'EUR', 0, now(), id FROM users LIMIT 1
    RETURNING id
)
INSERT INTO order_lines (order_id, product_id, location_id, stock_level_id, quantity,
                         unit_price_minor, currency)
SELECT o.id, {product}, {location}, s.id, 1, 0, 'EUR'
  FROM o, stock_levels AS s WHERE s.product_id = :product AND s.location_id = :location
"""
# Another product's or location's id in place of the level's own: the row's ids exist,
# but not together on that level.
MISMATCHES = {
    "product": (":other_product", ":location"),
    "location": (":product", ":other_location"),
}


@pytest.fixture
async def levels(client: httpx.AsyncClient, staff: dict[str, Any]) -> dict[str, str]:
    """Two products stocked at two locations (four levels)."""
    product, other_product = [await create_product(client, staff["headers"]) for _ in range(2)]
    location, other_location = [await create_location(client, staff["headers"]) for _ in range(2)]
    for p in (product, other_product):
        for loc in (location, other_location):
            response = await receive_stock(client, staff["headers"], p["id"], loc["id"], 5)
            assert response.status_code == 201, response.text
    return {
        "product": product["id"],
        "other_product": other_product["id"],
        "location": location["id"],
        "other_location": other_location["id"],
    }


@pytest.mark.parametrize("statement", [LEDGER_ROW, ORDER_LINE], ids=["ledger", "order line"])
@pytest.mark.parametrize("mismatch", sorted(MISMATCHES))
async def test_a_row_names_only_its_levels_product_and_location(
    ctx: AppContext, levels: dict[str, str], statement: str, mismatch: str
) -> None:
    product, location = MISMATCHES[mismatch]
    refused = statement.format(
        product=f"CAST({product} AS uuid)", location=f"CAST({location} AS uuid)"
    )
    with pytest.raises(IntegrityError, match="stock_level_id_stock_levels"):
        async with ctx.db.engine.begin() as conn:
            await conn.execute(text(refused), levels)
    # The same row naming the level's own product and location is accepted.
    accepted = statement.format(
        product="CAST(:product AS uuid)", location="CAST(:location AS uuid)"
    )
    async with ctx.db.engine.begin() as conn:
        assert (await conn.execute(text(accepted), levels)).rowcount == 1


@pytest.mark.parametrize("table", ["products", "locations"])
async def test_a_product_or_location_with_stock_history_cannot_be_deleted(
    ctx: AppContext, levels: dict[str, str], table: str
) -> None:
    key = "product" if table == "products" else "location"
    with pytest.raises(IntegrityError, match="violates foreign key constraint"):
        async with ctx.db.engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": levels[key]})
