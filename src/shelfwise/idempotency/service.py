"""Idempotency keys, implemented once for every endpoint that creates or moves stock.

Semantics (Stripe / IETF draft `Idempotency-Key`), per caller:
- same key, same request      → the stored status and body are replayed;
- same key, different request → `IdempotencyKeyReused` (422);
- same key while the first is still running → `IdempotencyKeyInProgress` (409);
The in-flight check is a transaction-scoped advisory lock on the key: a second request
does not queue behind the first, it is told to retry. The record is inserted inside the
caller's transaction, so it commits or rolls back with the effect itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import IdempotencyKeyInProgress, IdempotencyKeyReused
from shelfwise.idempotency.models import IdempotencyRecord

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """Either a fresh result of the effect, or the replay of an earlier one."""

    result: T | None
    replay: StoredResponse | None
    # The response rendered for a fresh result under an idempotency key (it was stored
    # with the key), so the edge does not render it a second time.
    stored: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class IdempotentRequest(Generic[T]):
    principal: str
    key: str
    fingerprint: str
    render: Callable[[T], StoredResponse]


async def run_idempotent(
    session: AsyncSession,
    request: IdempotentRequest[T] | None,
    effect: Callable[[], Awaitable[T]],
) -> Outcome[T]:
    """Run `effect` at most once per key. Must be called inside an open transaction."""
    if request is None:
        return Outcome(result=await effect(), replay=None)
    lock_key = func.hashtextextended(request.principal + "\x1f" + request.key, 0)
    if not await session.scalar(select(func.pg_try_advisory_xact_lock(lock_key))):
        raise IdempotencyKeyInProgress("Retry once the first request has finished")
    existing = await session.get(IdempotencyRecord, (request.principal, request.key))
    if existing is not None:
        if existing.fingerprint != request.fingerprint:
            raise IdempotencyKeyReused("This key was used with a different request")
        return Outcome(
            result=None, replay=StoredResponse(existing.response_status, existing.response_body)
        )
    result = await effect()
    stored = request.render(result)
    session.add(
        IdempotencyRecord(
            principal=request.principal,
            key=request.key,
            fingerprint=request.fingerprint,
            response_status=stored.status,
            response_body=stored.body,
        )
    )
    await session.flush()
    return Outcome(result=result, replay=None, stored=stored)


async def prune_idempotency_keys(session: AsyncSession, *, older_than: datetime) -> int:
    """Delete records created before `older_than`; keep at least 24 h (caller's choice)."""
    async with session.begin():
        deleted = await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < older_than)
        )
    return int(deleted.rowcount)  # type: ignore[attr-defined]
