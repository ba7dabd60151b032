"""Opaque refresh tokens with rotation and reuse detection (OAuth 2.0 Security BCP §4.14).

Each login starts a *family*. A refresh token works once: using it marks it used and
returns a new one in the same family. If a token that was already used is presented
again, someone holds a copy — the legitimate client or a thief, we cannot tell which — so
the whole family is revoked and the event is logged. Tokens expire when idle
(`refresh_idle_days`) and families at an absolute limit (`refresh_absolute_days`).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.errors import Unauthenticated
from shelfwise.identity.models import User
from shelfwise.identity.sessions import token_hash
from shelfwise.identity.sessions_models import RefreshFamily, RefreshToken
from shelfwise.observability.metrics import AUTH_FAILURES, SECURITY_EVENTS

log = structlog.get_logger("shelfwise.identity.refresh")


class InvalidRefreshToken(Unauthenticated):
    code = "invalid_refresh_token"
    title = "Refresh token is invalid, expired or revoked"


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class Rotation:
    user_id: uuid.UUID
    role: str
    family_id: uuid.UUID
    token: str


def _add_token(
    session: AsyncSession, family_id: uuid.UUID, now: datetime, policy: RefreshPolicy
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            family_id=family_id,
            token_hash=token_hash(token),
            created_at=now,
            idle_expires_at=now + policy.idle,
        )
    )
    return token


async def start_family(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    now: datetime,
    policy: RefreshPolicy,
    user_agent: str,
    ip: str,
) -> tuple[uuid.UUID, str]:
    family = RefreshFamily(
        id=uuid.uuid4(),
        user_id=user_id,
        created_at=now,
        last_used_at=now,
        absolute_expires_at=now + policy.absolute,
        user_agent=user_agent[:256],
        ip=ip[:64],
    )
    async with session.begin():
        session.add(family)
        await session.flush()
        token = _add_token(session, family.id, now, policy)
    return family.id, token


def _reject(reason: str) -> InvalidRefreshToken:
    AUTH_FAILURES.labels(f"refresh_{reason}").inc()
    return InvalidRefreshToken("Sign in again")


async def rotate(
    session: AsyncSession, presented: str, *, now: datetime, policy: RefreshPolicy
) -> Rotation:
    reused_family: uuid.UUID | None = None
    async with session.begin():
        row = (
            await session.execute(
                select(RefreshToken, RefreshFamily, User)
                .join(RefreshFamily, RefreshFamily.id == RefreshToken.family_id)
                .join(User, User.id == RefreshFamily.user_id)
                .where(RefreshToken.token_hash == token_hash(presented))
                .with_for_update(of=RefreshFamily)  # rotations of one family serialise
            )
        ).one_or_none()
        if row is None:
            raise _reject("unknown")
        token, family, user = row
        if family.revoked_at is not None or not user.is_active:
            raise _reject("revoked")
        if token.used_at is not None:
            family.revoked_at, family.revoked_reason = now, "reuse_detected"
            reused_family = family.id
        elif now >= family.absolute_expires_at or now >= token.idle_expires_at:
            raise _reject("expired")
        else:
            token.used_at = now
            family.last_used_at = now
            new_token = _add_token(session, family.id, now, policy)
    if reused_family is not None:  # committed the revocation first, then refuse
        SECURITY_EVENTS.labels("refresh_token_reuse").inc()
        log.warning(
            "security_refresh_token_reuse", family_id=str(reused_family), user_id=str(user.id)
        )
        raise _reject("reuse")
    return Rotation(user_id=user.id, role=user.role, family_id=family.id, token=new_token)


async def revoke_by_token(
    session: AsyncSession, presented: str, *, now: datetime, reason: str
) -> bool:
    async with session.begin():
        family_id = await session.scalar(
            select(RefreshToken.family_id).where(RefreshToken.token_hash == token_hash(presented))
        )
        if family_id is None:
            return False
        await _revoke(session, RefreshFamily.id == family_id, now, reason)
    return True


async def _revoke(session: AsyncSession, condition: object, now: datetime, reason: str) -> int:
    result = await session.execute(
        update(RefreshFamily)
        .where(condition, RefreshFamily.revoked_at.is_(None))  # type: ignore[arg-type]
        .values(revoked_at=now, revoked_reason=reason)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def revoke_family(
    session: AsyncSession,
    family_id: uuid.UUID,
    *,
    user_id: uuid.UUID | None,
    now: datetime,
    reason: str,
) -> bool:
    condition = RefreshFamily.id == family_id
    if user_id is not None:
        condition = condition & (RefreshFamily.user_id == user_id)
    async with session.begin():
        return await _revoke(session, condition, now, reason) > 0


async def revoke_user_families(
    session: AsyncSession, user_id: uuid.UUID, *, now: datetime, reason: str
) -> int:
    async with session.begin():
        return await _revoke(session, RefreshFamily.user_id == user_id, now, reason)


async def active_families(
    session: AsyncSession, user_id: uuid.UUID, *, now: datetime
) -> list[RefreshFamily]:
    async with session.begin():
        rows = await session.scalars(
            select(RefreshFamily)
            .where(
                RefreshFamily.user_id == user_id,
                RefreshFamily.revoked_at.is_(None),
                RefreshFamily.absolute_expires_at > now,
            )
            .order_by(RefreshFamily.created_at)
        )
        return list(rows)
