"""Stock transfers between locations: both legs in one transaction, in lock order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import InsufficientStock, InvalidInput
from shelfwise.idempotency.service import IdempotentRequest, Outcome, run_idempotent_on
from shelfwise.inventory import domain, store
from shelfwise.inventory.service import ensure_level, refused_at
from shelfwise.inventory.store import LevelRow
from shelfwise.store.unit import UnitOfWork, run_unit


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
    source: LevelRow
    destination: LevelRow


async def _apply(
    unit: UnitOfWork, transfer: Transfer, actor_id: uuid.UUID | None
) -> TransferResult:
    product = transfer.product_id
    await ensure_level(unit, product, transfer.from_location_id)
    await ensure_level(unit, product, transfer.to_location_id)
    # Both rows locked in ascending id order (as every multi-level writer does), so two
    # transfers in opposite directions cannot deadlock; the rule is checked under the lock.
    levels = await store.lock_at(
        unit, [(product, transfer.from_location_id), (product, transfer.to_location_id)]
    )
    source = levels[(product, transfer.from_location_id)]
    destination = levels[(product, transfer.to_location_id)]
    try:
        out, into = domain.transfer(source.counters, destination.counters, transfer.quantity)
    except InsufficientStock as exc:
        raise refused_at(exc, product_id=str(product)) from None
    transfer_id = uuid.uuid4()
    reference = f"transfer:{transfer_id}"
    edits = store.StockEdits({source.id: source, destination.id: destination})
    for level, leg in ((source, out), (destination, into)):
        edits.record(level.id, leg, reason=transfer.reason, reference=reference)
    written = await store.write(
        unit, edits, cause="transfer", reference=reference, actor_id=actor_id
    )
    return TransferResult(transfer_id, written.levels[source.id], written.levels[destination.id])


async def transfer_stock(
    session: AsyncSession,
    transfer: Transfer,
    *,
    actor_id: uuid.UUID | None,
    idempotency: IdempotentRequest[TransferResult] | None = None,
) -> Outcome[TransferResult]:
    if transfer.from_location_id == transfer.to_location_id:
        raise InvalidInput("Source and destination must differ")

    async def work(unit: UnitOfWork) -> Outcome[TransferResult]:
        return await run_idempotent_on(
            unit.conn, idempotency, lambda: _apply(unit, transfer, actor_id)
        )

    return await run_unit(session, work, use_case="transfer_stock")
