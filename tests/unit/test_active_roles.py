"""Principals' roles: concurrent look-ups of one user share a query (single flight)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

from shelfwise.driverpool import DriverPool
from shelfwise.identity.models import Role
from shelfwise.identity.service import ActiveRoles


class SlowReads:
    """Stands in for the driver pool: counts queries, answers when told to."""

    def __init__(self) -> None:
        self.queries = 0
        self.answer = asyncio.Event()

    async def fetch_one(self, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
        self.queries += 1
        await self.answer.wait()
        return {"role": "staff"}


async def test_concurrent_lookups_of_one_user_share_one_query() -> None:
    reads = SlowReads()
    roles = ActiveRoles(cast(DriverPool, reads))
    user, other = uuid.uuid4(), uuid.uuid4()
    waiting = [asyncio.create_task(roles.get(user)) for _ in range(50)]
    waiting.append(asyncio.create_task(roles.get(other)))
    await asyncio.sleep(0)  # let every task start and join its look-up
    reads.answer.set()
    assert await asyncio.gather(*waiting) == [Role.STAFF] * 51
    assert reads.queries == 2  # one per user, not one per request
    # Once answered, the next request asks again: nothing is cached.
    assert await roles.get(user) is Role.STAFF
    assert reads.queries == 3


async def test_a_waiter_that_gives_up_does_not_cancel_the_others() -> None:
    reads = SlowReads()
    roles = ActiveRoles(cast(DriverPool, reads))
    user = uuid.uuid4()
    first = asyncio.create_task(roles.get(user))
    second = asyncio.create_task(roles.get(user))
    await asyncio.sleep(0)
    first.cancel()
    reads.answer.set()
    assert await second is Role.STAFF
    assert reads.queries == 1
