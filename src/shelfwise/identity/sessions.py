"""Server-side browser sessions: in Postgres by default, in Redis when configured.

The cookie holds a random 256-bit token; the store keeps only its SHA-256. A session ends
at the first of: idle timeout (no request for `session_idle_minutes`), absolute timeout
(`session_absolute_hours` after login), logout, revocation (by the user, an admin, a role
change or disabling the account).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shelfwise.identity.sessions_models import UserSession

TOUCH_INTERVAL = timedelta(minutes=1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    absolute_expires_at: datetime
    user_agent: str
    ip: str


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    idle: timedelta
    absolute: timedelta

    def alive(self, record: SessionRecord, now: datetime) -> bool:
        return now < record.absolute_expires_at and now < record.last_seen_at + self.idle


class SessionStore(Protocol):
    async def create(
        self, user_id: uuid.UUID, *, now: datetime, user_agent: str, ip: str
    ) -> tuple[str, SessionRecord]: ...

    async def resolve(self, token: str, *, now: datetime) -> SessionRecord | None: ...

    async def revoke(
        self, session_id: uuid.UUID, *, user_id: uuid.UUID | None, reason: str, now: datetime
    ) -> bool: ...

    async def revoke_user(self, user_id: uuid.UUID, *, reason: str, now: datetime) -> int: ...

    async def list_user(self, user_id: uuid.UUID, *, now: datetime) -> list[SessionRecord]: ...


def _new_token() -> str:
    return secrets.token_urlsafe(32)


class PostgresSessionStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], policy: SessionPolicy) -> None:
        self._sessions = sessions
        self.policy = policy

    @staticmethod
    def _record(row: UserSession) -> SessionRecord:
        return SessionRecord(
            row.id,
            row.user_id,
            row.created_at,
            row.last_seen_at,
            row.absolute_expires_at,
            row.user_agent,
            row.ip,
        )

    async def create(
        self, user_id: uuid.UUID, *, now: datetime, user_agent: str, ip: str
    ) -> tuple[str, SessionRecord]:
        token = _new_token()
        row = UserSession(
            token_hash=token_hash(token),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            absolute_expires_at=now + self.policy.absolute,
            user_agent=user_agent[:256],
            ip=ip[:64],
        )
        async with self._sessions() as session, session.begin():
            session.add(row)
        return token, self._record(row)

    async def resolve(self, token: str, *, now: datetime) -> SessionRecord | None:
        async with self._sessions() as session, session.begin():
            row = await session.scalar(
                select(UserSession).where(
                    UserSession.token_hash == token_hash(token), UserSession.revoked_at.is_(None)
                )
            )
            if row is None or not self.policy.alive(self._record(row), now):
                return None
            if now - row.last_seen_at >= TOUCH_INTERVAL:  # not a write per request
                row.last_seen_at = now
            return self._record(row)

    async def revoke(
        self, session_id: uuid.UUID, *, user_id: uuid.UUID | None, reason: str, now: datetime
    ) -> bool:
        stmt = update(UserSession).where(
            UserSession.id == session_id, UserSession.revoked_at.is_(None)
        )
        if user_id is not None:
            stmt = stmt.where(UserSession.user_id == user_id)
        async with self._sessions() as session, session.begin():
            result = await session.execute(stmt.values(revoked_at=now, revoked_reason=reason))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def revoke_user(self, user_id: uuid.UUID, *, reason: str, now: datetime) -> int:
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(UserSession)
                .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def list_user(self, user_id: uuid.UUID, *, now: datetime) -> list[SessionRecord]:
        async with self._sessions() as session, session.begin():
            rows = await session.scalars(
                select(UserSession)
                .where(UserSession.user_id == user_id, UserSession.revoked_at.is_(None))
                .order_by(UserSession.created_at)
            )
            return [r for r in map(self._record, rows) if self.policy.alive(r, now)]


class RedisSessionStore:
    """Sessions as Redis hashes with a TTL, plus a per-user index for listing/revoking.

    Revoking deletes the keys, so every instance sees it on its next request."""

    def __init__(self, redis: Redis, policy: SessionPolicy, prefix: str = "shelfwise") -> None:
        self._redis = redis
        self.policy = policy
        self._prefix = prefix

    def _key(self, kind: str, value: object) -> str:
        return f"{self._prefix}:{kind}:{value}"

    @staticmethod
    def _dump(record: SessionRecord) -> str:
        data = asdict(record)
        return json.dumps(
            {k: str(v) if not isinstance(v, datetime) else v.isoformat() for k, v in data.items()}
        )

    @staticmethod
    def _load(raw: str | bytes) -> SessionRecord:
        data: dict[str, Any] = json.loads(raw)
        return SessionRecord(
            id=uuid.UUID(data["id"]),
            user_id=uuid.UUID(data["user_id"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            last_seen_at=datetime.fromisoformat(data["last_seen_at"]),
            absolute_expires_at=datetime.fromisoformat(data["absolute_expires_at"]),
            user_agent=data["user_agent"],
            ip=data["ip"],
        )

    def _ttl(self, record: SessionRecord, now: datetime) -> int:
        remaining = min(record.absolute_expires_at - now, self.policy.idle)
        return max(int(remaining.total_seconds()), 1)

    async def _save(self, hashed: str, record: SessionRecord, now: datetime) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("session", hashed), self._dump(record), ex=self._ttl(record, now))
            pipe.set(
                self._key("session-id", record.id),
                hashed,
                ex=int(self.policy.absolute.total_seconds()),
            )
            pipe.sadd(self._key("user-sessions", record.user_id), hashed)
            await pipe.execute()

    async def create(
        self, user_id: uuid.UUID, *, now: datetime, user_agent: str, ip: str
    ) -> tuple[str, SessionRecord]:
        token = _new_token()
        record = SessionRecord(
            uuid.uuid4(), user_id, now, now, now + self.policy.absolute, user_agent[:256], ip[:64]
        )
        await self._save(token_hash(token), record, now)
        return token, record

    async def resolve(self, token: str, *, now: datetime) -> SessionRecord | None:
        hashed = token_hash(token)
        raw = await self._redis.get(self._key("session", hashed))
        if raw is None:
            return None
        record = self._load(raw)
        if not self.policy.alive(record, now):
            return None
        if now - record.last_seen_at >= TOUCH_INTERVAL:
            record = SessionRecord(
                record.id,
                record.user_id,
                record.created_at,
                now,
                record.absolute_expires_at,
                record.user_agent,
                record.ip,
            )
            await self._save(hashed, record, now)
        return record

    async def _delete(self, hashed: str, record: SessionRecord) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("session", hashed), self._key("session-id", record.id))
            pipe.srem(self._key("user-sessions", record.user_id), hashed)
            await pipe.execute()

    async def revoke(
        self, session_id: uuid.UUID, *, user_id: uuid.UUID | None, reason: str, now: datetime
    ) -> bool:
        hashed = await self._redis.get(self._key("session-id", session_id))
        if hashed is None:
            return False
        hashed = hashed.decode() if isinstance(hashed, bytes) else hashed
        raw = await self._redis.get(self._key("session", hashed))
        if raw is None:
            return False
        record = self._load(raw)
        if user_id is not None and record.user_id != user_id:
            return False
        await self._delete(hashed, record)
        return True

    async def _user_records(self, user_id: uuid.UUID) -> list[tuple[str, SessionRecord]]:
        found = []
        for member in await self._redis.smembers(self._key("user-sessions", user_id)):
            hashed = member.decode() if isinstance(member, bytes) else str(member)
            raw = await self._redis.get(self._key("session", hashed))
            if raw is None:  # expired by TTL: tidy the index
                await self._redis.srem(self._key("user-sessions", user_id), hashed)
                continue
            found.append((hashed, self._load(raw)))
        return found

    async def revoke_user(self, user_id: uuid.UUID, *, reason: str, now: datetime) -> int:
        records = await self._user_records(user_id)
        for hashed, record in records:
            await self._delete(hashed, record)
        return len(records)

    async def list_user(self, user_id: uuid.UUID, *, now: datetime) -> list[SessionRecord]:
        records = [r for _, r in await self._user_records(user_id) if self.policy.alive(r, now)]
        return sorted(records, key=lambda r: r.created_at)
