"""Webhook request and response bodies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

EventTypeName = Annotated[str, Field(pattern=r"^(\*|[a-z_]+\.[a-z_]+)$", max_length=64)]
Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=r"^https?://")]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    event_types: list[EventTypeName] = Field(min_length=1, max_length=50)
    description: str = Field(default="", max_length=200)


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    event_types: list[EventTypeName] | None = Field(default=None, min_length=1, max_length=50)
    description: str | None = Field(default=None, max_length=200)
    paused: bool | None = Field(
        default=None, description="true pauses; false resumes (also re-enables a disabled one)"
    )


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    status: str
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None = Field(
        description="While set and in the future, deliveries carry a second `v1` signed "
        "with the secret that was replaced by the last rotation."
    )


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Shown once: store it now to verify signatures.")


GRACE_DEFAULT_SECONDS = 24 * 3600
GRACE_MAX_SECONDS = 7 * 24 * 3600


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        default=GRACE_DEFAULT_SECONDS,
        ge=0,
        le=GRACE_MAX_SECONDS,
        description="How long the old secret keeps signing deliveries (0: stop at once).",
    )


class WebhookList(BaseModel):
    data: list[WebhookOut]


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    subscription_id: uuid.UUID
    event_id: int
    event_type: str
    status: str
    attempts: int
    response_code: int | None
    latency_ms: int | None
    last_error: str | None
    response_body: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
