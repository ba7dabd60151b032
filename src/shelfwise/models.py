"""Imports every model so `Base.metadata` is complete (for Alembic and tests)."""

from shelfwise.catalog.models import Product
from shelfwise.events.models import OutboxEvent
from shelfwise.idempotency.models import IdempotencyRecord
from shelfwise.identity.models import ApiKey, RoleRow, User
from shelfwise.identity.sessions_models import RefreshFamily, RefreshToken, UserSession
from shelfwise.inventory.models import Location, StockLevel, StockMovement
from shelfwise.jobs.models import JobProgress
from shelfwise.orders.models import Order, OrderLine
from shelfwise.uploads.models import ProductImage
from shelfwise.webhooks.models import WebhookCursor, WebhookDelivery, WebhookSubscription

__all__ = [
    "ApiKey",
    "IdempotencyRecord",
    "JobProgress",
    "Location",
    "Order",
    "OrderLine",
    "OutboxEvent",
    "Product",
    "ProductImage",
    "RefreshFamily",
    "RefreshToken",
    "RoleRow",
    "StockLevel",
    "StockMovement",
    "User",
    "UserSession",
    "WebhookCursor",
    "WebhookDelivery",
    "WebhookSubscription",
]
