"""Stock operations on behalf of orders, run inside the caller's transaction.

Lock order: whenever several levels change in one transaction, they are updated in
ascending `stock_levels.id`. Each conditional UPDATE locks its row, so every transaction
acquires its locks in the same global order and two of them can never wait on each other
in a cycle (no deadlocks between multi-line orders, transfers and expiry).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.inventory.models import MovementKind, StockLevel, StockMovement


@dataclass(frozen=True, slots=True)
class LevelAvailability:
    stock_level_id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    available: int


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One line's effect on one level: deltas for `on_hand` and `reserved`."""

    stock_level_id: int
    product_id: uuid.UUID
    location_id: uuid.UUID
    on_hand_delta: int
    reserved_delta: int


async def apply_changes(session: AsyncSession, changes: Iterable[LevelChange]) -> None:
    """Apply already-authorised changes (release, commit, restock) in lock order.

    Changes to the same level are summed first: one UPDATE per level. The CHECK
    constraint rejects any result that would break `0 <= reserved <= on_hand`.
    """
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for change in changes:
        totals[change.stock_level_id][0] += change.on_hand_delta
        totals[change.stock_level_id][1] += change.reserved_delta
    for level_id in sorted(totals):
        on_hand_delta, reserved_delta = totals[level_id]
        await session.execute(
            update(StockLevel)
            .where(StockLevel.id == level_id)
            .values(
                on_hand=StockLevel.on_hand + on_hand_delta,
                reserved=StockLevel.reserved + reserved_delta,
                version=StockLevel.version + 1,
                updated_at=func.now(),
            )
        )


async def record_movements(
    session: AsyncSession,
    changes: Sequence[LevelChange],
    *,
    kind: MovementKind,
    reason: str,
    order_id: uuid.UUID | None = None,
    reference: str | None = None,
    actor_id: uuid.UUID | None = None,
) -> None:
    if not changes:
        return
    await session.execute(
        insert(StockMovement),
        [
            {
                "stock_level_id": c.stock_level_id,
                "product_id": c.product_id,
                "location_id": c.location_id,
                "kind": kind.value,
                "on_hand_delta": c.on_hand_delta,
                "reserved_delta": c.reserved_delta,
                "reason": reason,
                "reference": reference,
                "order_id": order_id,
                "actor_id": actor_id,
            }
            for c in changes
        ],
    )
