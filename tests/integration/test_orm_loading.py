"""Relationships refuse implicit loading: N+1 queries cannot happen unnoticed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import selectinload

from shelfwise.context import AppContext
from shelfwise.inventory.models import StockLevel
from tests.support import create_location, create_product, receive_stock


async def test_unloaded_relationship_raises_and_explicit_load_works(
    client: httpx.AsyncClient, ctx: AppContext, staff: dict[str, Any]
) -> None:
    product = await create_product(client, staff["headers"], name="Loaded mug")
    location = await create_location(client, staff["headers"])
    assert (
        await receive_stock(client, staff["headers"], product["id"], location["id"], 3)
    ).status_code == 201

    async with ctx.db.sessions() as session, session.begin():
        level = (await session.scalars(select(StockLevel))).one()
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = level.product

    async with ctx.db.sessions() as session, session.begin():
        stmt = select(StockLevel).options(selectinload(StockLevel.product))
        level = (await session.scalars(stmt)).one()
        assert level.product.name == "Loaded mug"
