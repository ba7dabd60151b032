"""Ledger reconciliation: every counter must be explained by history.

Two checks, read in ONE snapshot (REPEATABLE READ, read only) so that a transaction
committing between them cannot produce a false alarm:
- `on_hand` / `reserved` of each level equal the sums of its ledger deltas;
- `reserved` of each level equals the quantities of orders still holding a reservation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.inventory.service import Drift, ledger_drift_statement
from shelfwise.orders.expiry import ReservationDrift, reservation_drift_statement
from shelfwise.transactions import Isolation, in_transaction

log = structlog.get_logger("shelfwise.reconciliation")


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    ledger: list[Drift] = field(default_factory=list)
    reservations: list[ReservationDrift] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.ledger and not self.reservations


async def reconcile_all(session: AsyncSession) -> ReconciliationReport:
    async def work() -> ReconciliationReport:
        ledger = [Drift(*row) for row in await session.execute(ledger_drift_statement())]
        held = [
            ReservationDrift(*row) for row in await session.execute(reservation_drift_statement())
        ]
        return ReconciliationReport(ledger=ledger, reservations=held)

    report = await in_transaction(
        session, work, use_case="reconcile", isolation=Isolation.REPEATABLE_READ
    )
    if not report.clean:
        log.error("ledger_drift", ledger=len(report.ledger), reservations=len(report.reservations))
    return report
