"""n-plus-one: one query per row to load a relationship, instead of one for all rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import selectinload

from shelfwise.catalog.models import Product
from shelfwise.drills.base import Drill, Outcome
from shelfwise.drills.system import DrillSystem
from shelfwise.inventory.models import StockLevel
from shelfwise.seed import seed_catalog


class StatementCounter:
    """Counts the statements the engine sends while it is attached."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine.sync_engine
        self.count = 0

    def _seen(self, *_: Any) -> None:
        self.count += 1

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


async def run(system: DrillSystem, quick: bool) -> Outcome:
    db = system.ctx.db
    async with db.sessions() as session:
        await seed_catalog(session, products=10 if quick else 200)
    async with db.sessions() as session, session.begin():
        level = (await session.scalars(select(StockLevel).limit(1))).one()
        try:
            _ = level.product.name  # the implicit per-row load
            refused = False
        except InvalidRequestError:
            refused = True  # lazy="raise": the N+1 cannot happen silently
    with StatementCounter(db.engine) as per_row:
        async with db.sessions() as session, session.begin():
            levels = (await session.scalars(select(StockLevel))).all()
            names = [(await session.get(Product, each.product_id)) for each in levels]
    with StatementCounter(db.engine) as eager:
        async with db.sessions() as session, session.begin():
            stmt = select(StockLevel).options(selectinload(StockLevel.product))
            loaded = (await session.scalars(stmt)).all()
            eager_names = [each.product.name for each in loaded]
    return Outcome(
        signal="statement count",
        seen=refused and per_row.count > eager.count and len(names) == len(eager_names),
        evidence={
            "lazy load refused (lazy='raise')": refused,
            "rows": len(loaded),
            "statements, one per row (BEGIN/COMMIT included)": per_row.count,
            "statements, selectinload": eager.count,
        },
        look_at=[
            "InvalidRequestError \"... lazy='raise'\" in the log or the test: a relationship "
            "touched without loading it",
            "`shelfwise db top`: a cheap statement with calls = rows x requests",
            "the request's trace: many identical database spans under one server span",
        ],
        fix="load the relationship with the query: selectinload / joinedload "
        "(one extra statement for all rows), never a query inside the loop",
    )


DRILL = Drill("n-plus-one", "a relationship loaded per row instead of once", run)
