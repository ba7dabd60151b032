"""Deleting credentials that can never be used again (the hourly `prune_auth_tokens` job).

A refresh family or browser session past its *absolute* expiry is dead whether or not it
was revoked. Revoked families are kept until then on purpose: reuse detection needs to
recognise a stolen old token for as long as it could have been valid. Deleting a family
deletes its tokens (ON DELETE CASCADE).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.identity.sessions_models import RefreshFamily, UserSession


@dataclass(frozen=True, slots=True)
class PrunedCredentials:
    refresh_families: int
    sessions: int


async def prune_expired_credentials(session: AsyncSession, *, now: datetime) -> PrunedCredentials:
    async with session.begin():
        families = await session.execute(
            delete(RefreshFamily).where(RefreshFamily.absolute_expires_at < now)
        )
        sessions = await session.execute(
            delete(UserSession).where(UserSession.absolute_expires_at < now)
        )
    return PrunedCredentials(
        refresh_families=int(families.rowcount),  # type: ignore[attr-defined]
        sessions=int(sessions.rowcount),  # type: ignore[attr-defined]
    )
