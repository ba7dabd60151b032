from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.json_schema import SkipJsonSchema

from shelfwise.types import Category, Currency, Description, MinorUnits, Name, Sku


class ProductSort(StrEnum):
    CREATED = "created_at"
    CREATED_DESC = "-created_at"
    NAME = "name"
    NAME_DESC = "-name"
    PRICE = "price"
    PRICE_DESC = "-price"
    SKU = "sku"
    SKU_DESC = "-sku"


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Sku
    name: Name
    description: Description = ""
    category: Category = "general"
    price_minor: MinorUnits
    currency: Currency


class ProductPatch(BaseModel):
    """Partial update; only the fields sent change. `null` is not a value for any of them."""

    # The document says what the validator enforces: no field is nullable (the `None`
    # default only means "not sent") and at least one field is sent.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    sku: Sku | SkipJsonSchema[None] = None
    name: Name | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    category: Category | SkipJsonSchema[None] = None
    price_minor: MinorUnits | SkipJsonSchema[None] = None
    currency: Currency | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _no_nulls_and_not_empty(self) -> ProductPatch:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        nulls = [name for name in self.model_fields_set if getattr(self, name) is None]
        if nulls:
            raise ValueError(f"fields cannot be null: {', '.join(sorted(nulls))}")
        return self

    def changes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    sku: str
    name: str
    description: str
    category: str
    price_minor: int
    currency: str
    version: int
    created_at: datetime
    updated_at: datetime
