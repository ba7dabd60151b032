"""Order use cases: place, read, confirm, cancel, fulfil. Each owns its transaction.

Isolation: READ COMMITTED throughout (docs/decisions/0010-isolation-levels.md). Stock is
reserved by conditional UPDATEs in ascending stock-level id order; order transitions lock
the order row first (`FOR UPDATE`), so two transitions of one order serialise and the
second sees the first's result. Transactions are still wrapped in `in_transaction`, which
retries a deadlock or serialization failure should one ever happen.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shelfwise.driverpool import DriverPool
from shelfwise.errors import InsufficientStock, InvalidCursor
from shelfwise.events.doorbell import Doorbell
from shelfwise.idempotency.service import (
    IdempotentRequest,
    Outcome,
    claim_params,
    queue_claim,
    queue_record,
    read_claim,
)
from shelfwise.identity.principal import Principal, PrincipalKind
from shelfwise.identity.scopes import Scope
from shelfwise.inventory.errors import LocationNotFound
from shelfwise.observability.metrics import ORDER_TRANSITIONS, ORDERS_PLACED
from shelfwise.orders import placement, store
from shelfwise.orders.errors import MixedCurrencies, OrderNotFound, UnknownProducts
from shelfwise.orders.lifecycle import TARGET, OrderAction
from shelfwise.orders.models import Order, OrderStatus
from shelfwise.orders.placement import PlacedOrder as PlacedOrder
from shelfwise.orders.store import OrderRow as OrderRow
from shelfwise.pagination import PageRequest, PageResult, page_from_rows
from shelfwise.store.unit import UnitOfWork, run_unit


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    quantities: dict[uuid.UUID, int]  # product_id -> quantity, one entry per product
    location_id: uuid.UUID | None = None


def sees_all_orders(principal: Principal) -> bool:
    return Scope.ORDERS_MANAGE in principal.scopes


def _visible_to(stmt: Select[Order], principal: Principal) -> Select[Order]:
    """Object-level authorization (no BOLA): without `orders:manage`, only own orders."""
    if sees_all_orders(principal):
        return stmt
    if principal.kind is PrincipalKind.API_KEY:
        return stmt.where(Order.placed_by_api_key_id == principal.id)
    return stmt.where(Order.placed_by_user_id == principal.id)


# -- placing -----------------------------------------------------------------------------


async def place_order(
    driver: DriverPool,
    doorbell: Doorbell,
    command: PlaceOrder,
    *,
    placer: Principal,
    now: datetime,
    reservation_ttl: timedelta,
    idempotency: IdempotentRequest[PlacedOrder] | None,
) -> Outcome[PlacedOrder]:
    """Reserve and record the order. The hottest write runs on the driver pool with fixed
    SQL (`orders.placement`, docs/decisions/0013), its statements queued and sent in
    batches: two round trips for a one-line order (docs/decisions/0035, 0041); the rules
    are the same as everywhere.
    Expiry needs no job per order: the minute sweep releases it, and confirming refuses
    it from `expires_at` on."""

    async def work(unit: UnitOfWork) -> Outcome[PlacedOrder]:
        # Top to bottom, in one transaction: claim the key (or replay), place, record.
        # BEGIN, the claim and the fast path's reservation (which acts only under the
        # claim) are queued together; the first read sends them in one round trip.
        batch = placement.batch_of(unit)
        claimed = queue_claim(batch, idempotency) if idempotency else None
        fast = placement.queue_fast_reservation(
            unit,
            command.quantities,
            command.location_id,
            claim=claim_params(idempotency) if idempotency else None,
        )
        replay = await read_claim(claimed, idempotency) if claimed and idempotency else None
        if replay is not None:
            return Outcome(result=None, replay=replay)
        placed = await placement.place(
            unit,
            command.quantities,
            command.location_id,
            placer=placer,
            expires_at=now + reservation_ttl,
            fast=fast,
        )
        # Queued with COMMIT: the order, its record and the commit are one round trip.
        stored = queue_record(batch, idempotency, placed) if idempotency else None
        return Outcome(result=placed, replay=None, stored=stored)

    try:
        # The unit wakes the relay after the commit (only if events were written).
        outcome = await run_unit(
            driver, work, use_case="place_order", doorbell=doorbell, batched=True
        )
    except (InsufficientStock, UnknownProducts, MixedCurrencies, LocationNotFound) as refusal:
        # Refusals by reason; each class has one fixed code, so the label stays bounded.
        ORDERS_PLACED.labels(refusal.code).inc()
        raise
    ORDERS_PLACED.labels("replayed" if outcome.replay else "reserved").inc()
    return outcome


# -- reading -----------------------------------------------------------------------------


async def get_order(session: AsyncSession, order_id: uuid.UUID, *, viewer: Principal) -> Order:
    stmt = _visible_to(select(Order).options(selectinload(Order.lines)), viewer)
    async with session.begin():
        order = await session.scalar(stmt.where(Order.id == order_id))
    if order is None:
        # The same 404 whether it does not exist or belongs to someone else.
        raise OrderNotFound(f"No order with id {order_id}")
    return order


def order_sort_key(order: Order) -> tuple[str, ...]:
    return (order.created_at.isoformat(), str(order.id))


async def list_orders(
    session: AsyncSession,
    *,
    viewer: Principal,
    page: PageRequest,
    status: OrderStatus | None = None,
) -> PageResult[Order]:
    """Newest first, keyset on (created_at, id)."""
    stmt = _visible_to(select(Order).options(selectinload(Order.lines)), viewer)
    if status is not None:
        stmt = stmt.where(Order.status == status.value)
    if page.after is not None:
        try:
            created_at, last_id = datetime.fromisoformat(page.after[0]), uuid.UUID(page.after[1])
        except (ValueError, IndexError) as exc:
            raise InvalidCursor("The cursor does not fit this list") from exc
        stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(created_at, last_id))
    stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(page.limit + 1)
    async with session.begin():
        rows = (await session.scalars(stmt)).all()
    return page_from_rows(rows, page.limit, order_sort_key)


# -- transitions -------------------------------------------------------------------------


def _owner(principal: Principal) -> store.Owner:
    """Object-level authorization for writes, as `_visible_to` for reads."""
    if sees_all_orders(principal):
        return store.Owner()
    if principal.kind is PrincipalKind.API_KEY:
        return store.Owner(api_key_id=principal.id)
    return store.Owner(user_id=principal.id)


async def _transition(
    session: AsyncSession,
    order_id: uuid.UUID,
    actor: Principal,
    now: datetime,
    action: OrderAction,
) -> OrderRow:
    async def work(unit: UnitOfWork) -> OrderRow:
        order = await store.lock_order(unit, order_id, _owner(actor))
        if order is None:
            raise OrderNotFound(f"No order with id {order_id}")
        (moved,) = await store.move(unit, [order], action, now=now, actor_id=actor.user_id)
        return moved

    order = await run_unit(session, work, use_case=f"order_{TARGET[action].value}")
    ORDER_TRANSITIONS.labels(order.status).inc()
    return order


async def confirm_order(
    session: AsyncSession, order_id: uuid.UUID, *, actor: Principal, now: datetime
) -> OrderRow:
    return await _transition(session, order_id, actor, now, OrderAction.CONFIRM)


async def cancel_order(
    session: AsyncSession, order_id: uuid.UUID, *, actor: Principal, now: datetime
) -> OrderRow:
    return await _transition(session, order_id, actor, now, OrderAction.CANCEL)


async def fulfil_order(
    session: AsyncSession, order_id: uuid.UUID, *, actor: Principal, now: datetime
) -> OrderRow:
    return await _transition(session, order_id, actor, now, OrderAction.FULFIL)
