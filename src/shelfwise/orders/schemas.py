from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shelfwise.orders.models import OrderStatus

MAX_LINES = 100


class OrderLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=10_000)]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: Annotated[
        list[OrderLineIn],
        Field(
            min_length=1,
            max_length=MAX_LINES,
            description="One line per product (two for one product are refused: merge them).",
        ),
    ]
    location_id: uuid.UUID | None = Field(
        default=None,
        description="Serve every line from this location. Omitted: the single location "
        "that can serve every line is chosen (see docs/decisions/0009-order-location.md).",
    )

    @field_validator("lines")
    @classmethod
    def _one_line_per_product(cls, lines: list[OrderLineIn]) -> list[OrderLineIn]:
        seen: set[uuid.UUID] = set()
        for line in lines:
            if line.product_id in seen:
                raise ValueError(f"product {line.product_id} appears twice; merge the lines")
            seen.add(line.product_id)
        return lines


class OrderLineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    product_id: uuid.UUID
    location_id: uuid.UUID
    quantity: int
    unit_price_minor: int
    currency: str


class OrderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    status: OrderStatus
    placed_by_user_id: uuid.UUID | None
    placed_by_api_key_id: uuid.UUID | None
    currency: str
    total_minor: int
    expires_at: datetime
    lines: list[OrderLineOut]
    version: int
    created_at: datetime
    updated_at: datetime
