from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shelfwise.inventory.models import MovementKind
from shelfwise.types import Code, Name, Reason, Text


class LocationKind(StrEnum):
    WAREHOUSE = "warehouse"
    STORE = "store"


class LocationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: Code
    name: Name
    kind: LocationKind = LocationKind.WAREHOUSE


class LocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    code: str
    name: str
    kind: LocationKind
    created_at: datetime


class StockLevelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    on_hand: int
    reserved: int
    available: int
    version: int
    updated_at: datetime


Quantity = Annotated[int, Field(ge=-1_000_000, le=1_000_000)]


class AdjustmentIn(BaseModel):
    """A receipt adds stock that arrived; an adjustment corrects a count (either sign)."""

    # The document states the validator's rules: never zero; a receipt only adds.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "receipt"}}, "required": ["kind"]},
            "then": {"properties": {"quantity": {"minimum": 1}}},
        },
    )
    product_id: uuid.UUID
    location_id: uuid.UUID
    kind: Literal["receipt", "adjustment"]
    quantity: Annotated[Quantity, Field(json_schema_extra={"not": {"const": 0}})]
    reason: Reason
    reference: Annotated[Text, Field(max_length=200)] | None = None

    @model_validator(mode="after")
    def _sign_fits_kind(self) -> AdjustmentIn:
        if self.quantity == 0:
            raise ValueError("quantity must not be zero")
        if self.kind == "receipt" and self.quantity < 0:
            raise ValueError("a receipt adds stock: quantity must be positive")
        return self


class MovementOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    stock_level_id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    kind: MovementKind
    on_hand_delta: int
    reserved_delta: int
    reason: str
    reference: str | None
    actor_id: uuid.UUID | None
    order_id: uuid.UUID | None
    created_at: datetime


class AdjustmentOut(BaseModel):
    movement: MovementOut
    level: StockLevelOut


class TransferIn(BaseModel):
    """Move unreserved units of one product from one location to another, atomically."""

    model_config = ConfigDict(extra="forbid")
    product_id: uuid.UUID
    from_location_id: uuid.UUID
    to_location_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]
    reason: Reason

    @model_validator(mode="after")
    def _distinct_locations(self) -> TransferIn:
        if self.from_location_id == self.to_location_id:
            raise ValueError("from_location_id and to_location_id must differ")
        return self


class TransferOut(BaseModel):
    transfer_id: uuid.UUID
    source: StockLevelOut
    destination: StockLevelOut


class StockOverviewOut(BaseModel):
    """A stock level as people read it: with the product's SKU and name and the location's
    code and name. `low`: `available` is under the server's low-stock threshold."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    product_id: uuid.UUID
    sku: str
    product_name: str
    location_id: uuid.UUID
    location_code: str
    location_name: str
    on_hand: int
    reserved: int
    available: int
    low: bool
    version: int
    updated_at: datetime
