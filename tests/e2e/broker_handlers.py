"""Handlers for `shelfwise consume --handler tests.e2e.broker_handlers:record` in e2e tests.

`record` writes each event to `broker_test_seen` in the inbox transaction. With
SHELFWISE_TEST_DIE_AT_POSITION set, the process kills itself with SIGKILL right after
the COMMIT of that position — before its ack — once (a marker file remembers it).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shelfwise.broker.envelope import BrokerEvent


async def record(session: AsyncSession, broker_event: BrokerEvent) -> None:
    await session.execute(
        text("INSERT INTO broker_test_seen (message_id, position) VALUES (:m, :p)"),
        {"m": broker_event.message_id, "p": broker_event.position},
    )
    die_at = os.environ.get("SHELFWISE_TEST_DIE_AT_POSITION")
    marker = Path(os.environ.get("SHELFWISE_TEST_DIE_MARKER", "died"))
    if die_at and int(die_at) == broker_event.position and not marker.exists():
        marker.touch()

        def die(_: Session) -> None:
            os.kill(os.getpid(), signal.SIGKILL)  # committed, not acked

        event.listen(session.sync_session, "after_commit", die, once=True)
