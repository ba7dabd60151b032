"""`updated_at` is never earlier than `created_at` (issue 12: seeded products showed it).

Seeding inserts every product in one transaction: `created_at` is the moment of each
insert (`clock_timestamp()`), so `updated_at` must not be the transaction's start.
"""

from __future__ import annotations

from sqlalchemy import text

from shelfwise.context import AppContext
from shelfwise.seed import seed_catalog


async def test_seeded_products_are_not_updated_before_they_were_created(ctx: AppContext) -> None:
    async with ctx.db.sessions() as session:
        await seed_catalog(session, products=20)  # one transaction, many inserts
    async with ctx.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT count(*), count(*) FILTER (WHERE updated_at < created_at) FROM products"
                )
            )
        ).one()
    assert rows[0] >= 20
    assert rows[1] == 0
