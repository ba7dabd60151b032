"""Idempotency keys, implemented once for every endpoint that creates or moves stock.

Semantics (Stripe / IETF draft `Idempotency-Key`), per caller:
- same key, same request      → the stored status and body are replayed;
- same key, different request → `IdempotencyKeyReused` (422);
- same key while the first is still running → `IdempotencyKeyInProgress` (409);
The in-flight check is a transaction-scoped advisory lock on the key: a second request
does not queue behind the first, it is told to retry. The record is inserted inside the
caller's transaction, so it commits or rolls back with the effect itself.

`claim` is two statements. `queue_claim` only queues them in a batch (`batches.py`), so
BEGIN before them and the effect's first statement after them travel in the same round
trip (placing an order, docs/decisions/0035 and 0041); `read_claim` then reads the
answer. Such a statement must act only under the claim: `claim_params` gives what it
needs to check that itself. `queue_record` likewise, to travel with COMMIT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.batches import Batch, Pending
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


# Fixed SQL on the driver (docs/decisions/0013): these run on every idempotent write.
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))"
FIND = (
    "SELECT fingerprint, response_status, response_body FROM idempotency_keys"
    " WHERE principal = %s AND key = %s"
)
RECORD = (
    "INSERT INTO idempotency_keys (principal, key, fingerprint, response_status, response_body)"
    " VALUES (%s, %s, %s, %s, %s)"
)


def lock_name(request: IdempotentRequest[Any]) -> str:
    return request.principal + "\x1f" + request.key


def claim_params(request: IdempotentRequest[Any]) -> dict[str, str]:
    """For a statement sent before the claim is read: `%(claim_lock)s` (the advisory
    lock's name), `%(principal)s`, `%(key)s`."""
    return {"claim_lock": lock_name(request), "principal": request.principal, "key": request.key}


@dataclass(frozen=True, slots=True)
class PendingClaim:
    """A claim's two statements, queued; their rows not read yet."""

    locked: Pending
    existing: Pending


def queue_claim(batch: Batch, request: IdempotentRequest[Any]) -> PendingClaim:
    """Queue the claim's statements. Two statements, not one: the lookup's snapshot must
    be taken after the lock is held, or a first request committing in between would go
    unseen (a batch's statements each take their own snapshot)."""
    locked = batch.queue(TRY_LOCK, (lock_name(request),))
    existing = batch.queue(FIND, (request.principal, request.key))
    return PendingClaim(locked, existing)


async def claim(conn: AsyncConnection[Any], request: IdempotentRequest[T]) -> StoredResponse | None:
    """Take the key for this transaction: the stored response to replay, or None when the
    effect is to run now (then `record` its response before commit). `conn` must be
    inside an open transaction."""
    return await read_claim(queue_claim(Batch(conn), request), request)


async def read_claim(
    pending: PendingClaim, request: IdempotentRequest[Any]
) -> StoredResponse | None:
    """`claim`'s answer from statements `queue_claim` queued (the first read sends them)."""
    locked = await pending.locked.fetchone()
    if not (locked and locked[0]):
        # Requests under one key are short: a second is a fair first retry interval.
        raise IdempotencyKeyInProgress(
            "Retry once the first request has finished", headers={"Retry-After": "1"}
        )
    existing = await pending.existing.fetchone()
    if existing is None:
        return None
    fingerprint, status, body = existing
    if fingerprint != request.fingerprint:
        raise IdempotencyKeyReused("This key was used with a different request")
    return StoredResponse(status, body)


def queue_record(batch: Batch, request: IdempotentRequest[T], result: T) -> StoredResponse:
    """Queue the response for `result` under the key, in the effect's own transaction."""
    stored = request.render(result)
    batch.queue(
        RECORD,
        (request.principal, request.key, request.fingerprint, stored.status, Jsonb(stored.body)),
    )
    return stored


async def record(
    conn: AsyncConnection[Any], request: IdempotentRequest[T], result: T
) -> StoredResponse:
    """Store the response for `result` under the key, in the effect's own transaction."""
    batch = Batch(conn)
    stored = queue_record(batch, request, result)
    await batch.send()
    return stored


async def run_idempotent_on(
    conn: AsyncConnection[Any],
    request: IdempotentRequest[T] | None,
    effect: Callable[[], Awaitable[T]],
) -> Outcome[T]:
    """Run `effect` at most once per key: `claim`, the effect, `record`."""
    if request is None:
        return Outcome(result=await effect(), replay=None)
    replay = await claim(conn, request)
    if replay is not None:
        return Outcome(result=None, replay=replay)
    result = await effect()
    return Outcome(result=result, replay=None, stored=await record(conn, request, result))


async def prune_idempotency_keys(session: AsyncSession, *, older_than: datetime) -> int:
    """Delete records created before `older_than`; keep at least 24 h (caller's choice)."""
    async with session.begin():
        deleted = await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at < older_than)
        )
    return int(deleted.rowcount)  # type: ignore[attr-defined]
