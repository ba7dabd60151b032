"""Webhook subscriptions, their delivery log, and the fan-out cursor on the event stream."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Identity,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from shelfwise.db import Base


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # by an admin
    DISABLED = "disabled"  # automatically, after too many consecutive failures


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries exhausted
    CANCELLED = "cancelled"  # the subscription was paused, disabled or deleted


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[uuid.UUID] = mapped_column(
        primary_key=True, server_default=text("gen_random_uuid()")
    )
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    description: Mapped[str] = mapped_column(String(200), server_default="")
    # Kept in clear: we sign with it, so it cannot be hashed (see docs/webhooks.md).
    secret: Mapped[str] = mapped_column(String(128))
    # After a rotation the old secret still signs (second `v1`) until it expires.
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), server_default=SubscriptionStatus.ACTIVE.value)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    disabled_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One (event, subscription) pair. The body is frozen at fan-out, so every attempt and
    every manual redelivery sends the same bytes with the same event id."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("subscription_id", "event_id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    subscription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    event_id: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    response_code: Mapped[int | None]
    latency_ms: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    response_body: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    updated_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))
    delivered_at: Mapped[datetime | None]


class WebhookCursor(Base):
    """The last stream position fanned out (a single row)."""

    __tablename__ = "webhook_cursor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
