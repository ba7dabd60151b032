"""Stock transfers between locations: both legs in one transaction, in lock order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import InsufficientStock, InvalidInput
from shelfwise.events.payloads import stock_changed
from shelfwise.idempotency.service import IdempotentRequest, Outcome, run_idempotent
from shelfwise.inventory import reservations
from shelfwise.inventory.models import MovementKind, StockLevel
from shelfwise.inventory.reservations import LevelChange
from shelfwise.inventory.service import ensure_level
from shelfwise.transactions import in_transaction


@dataclass(frozen=True, slots=True)
class Transfer:
    product_id: uuid.UUID
    from_location_id: uuid.UUID
    to_location_id: uuid.UUID
    quantity: int
    reason: str


@dataclass(frozen=True, slots=True)
class TransferResult:
    transfer_id: uuid.UUID
    source: StockLevel
    destination: StockLevel


async def _level(
    session: AsyncSession, product_id: uuid.UUID, location_id: uuid.UUID
) -> StockLevel:
    level = await session.scalar(
        select(StockLevel)
        .where(StockLevel.product_id == product_id, StockLevel.location_id == location_id)
        .execution_options(populate_existing=True)
    )
    assert level is not None  # ensure_level created it
    return level


async def _apply(
    session: AsyncSession, transfer: Transfer, actor_id: uuid.UUID | None
) -> TransferResult:
    await ensure_level(session, transfer.product_id, transfer.from_location_id)
    await ensure_level(session, transfer.product_id, transfer.to_location_id)
    source = await _level(session, transfer.product_id, transfer.from_location_id)
    destination = await _level(session, transfer.product_id, transfer.to_location_id)
    # Lock both rows in ascending id order (as every multi-level writer does), so two
    # transfers in opposite directions cannot deadlock; then check under the lock.
    rows = await session.execute(
        select(StockLevel.id, StockLevel.on_hand - StockLevel.reserved)
        .where(StockLevel.id.in_((source.id, destination.id)))
        .order_by(StockLevel.id)
        .with_for_update()
    )
    locked = {level_id: available for level_id, available in rows}.get(source.id)
    if locked is None or locked < transfer.quantity:
        raise InsufficientStock(
            f"Only {locked or 0} unreserved units at the source location",
            lines=[
                {
                    "product_id": str(transfer.product_id),
                    "requested": transfer.quantity,
                    "available": locked or 0,
                }
            ],
        )
    changes = [
        LevelChange(
            source.id, transfer.product_id, transfer.from_location_id, -transfer.quantity, 0
        ),
        LevelChange(
            destination.id, transfer.product_id, transfer.to_location_id, transfer.quantity, 0
        ),
    ]
    transfer_id = uuid.uuid4()
    await reservations.apply_changes(session, changes)
    for change, kind in zip(
        changes, (MovementKind.TRANSFER_OUT, MovementKind.TRANSFER_IN), strict=True
    ):
        await reservations.record_movements(
            session,
            [change],
            kind=kind,
            reason=transfer.reason,
            reference=f"transfer:{transfer_id}",
            actor_id=actor_id,
        )
    await stock_changed(
        session, [source.id, destination.id], cause="transfer", reference=f"transfer:{transfer_id}"
    )
    return TransferResult(
        transfer_id,
        await _level(session, transfer.product_id, transfer.from_location_id),
        await _level(session, transfer.product_id, transfer.to_location_id),
    )


async def transfer_stock(
    session: AsyncSession,
    transfer: Transfer,
    *,
    actor_id: uuid.UUID | None,
    idempotency: IdempotentRequest[TransferResult] | None = None,
) -> Outcome[TransferResult]:
    if transfer.from_location_id == transfer.to_location_id:
        raise InvalidInput("Source and destination must differ")
    return await in_transaction(
        session,
        lambda: run_idempotent(session, idempotency, lambda: _apply(session, transfer, actor_id)),
        use_case="transfer_stock",
    )
