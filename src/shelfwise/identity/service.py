"""Identity use cases. Each public function owns its transaction."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.driverpool import DriverPool
from shelfwise.errors import AlreadyExists, Conflict, InvalidInput, NotFound, Unauthenticated
from shelfwise.identity.models import ApiKey, Role, User
from shelfwise.identity.passwords import (
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    PasswordHasher,
    is_common_password,
)
from shelfwise.identity.scopes import Scope
from shelfwise.observability.metrics import AUTH_FAILURES

log = structlog.get_logger("shelfwise.identity")

API_KEY_PREFIX = "sw_"
API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)


class InvalidCredentials(Unauthenticated):
    code = "invalid_credentials"
    title = "Email or password is incorrect"


class EmailUnavailable(AlreadyExists):
    code = "email_unavailable"
    title = "This email cannot be registered"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password_policy(password: str) -> None:
    # ASVS 2.1: length is what matters; no composition rules; no known-common passwords.
    if is_common_password(password):
        raise InvalidInput(
            "This password is too common; choose another",
            errors=[{"field": "body.password", "message": "too common", "type": "password_policy"}],
        )
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput(
            f"Password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
            errors=[
                {
                    "field": "body.password",
                    "message": "length out of range",
                    "type": "password_policy",
                }
            ],
        )


async def create_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    *,
    email: str,
    password: str,
    full_name: str = "",
    role: Role = Role.CUSTOMER,
) -> User:
    check_password_policy(password)
    password_hash = await hasher.hash(
        password
    )  # before the transaction: no lock held while hashing
    user = User(
        email=normalise_email(email),
        password_hash=password_hash,
        full_name=full_name,
        role=role.value,
    )
    try:
        async with session.begin():
            session.add(user)
    except IntegrityError as exc:
        raise EmailUnavailable("An account with this email cannot be created") from exc
    log.info("user_created", user_id=str(user.id), role=role.value)
    return user


async def authenticate(
    session: AsyncSession, hasher: PasswordHasher, *, email: str, password: str
) -> User:
    """Same answer, and about the same time, whether the email is unknown or the password
    is wrong: the dummy hash is verified when there is no such user."""
    async with session.begin():
        user = await session.scalar(select(User).where(User.email == normalise_email(email)))
    ok = await hasher.verify(user.password_hash if user else None, password)
    if user is None or not ok or not user.is_active:
        reason = "unknown_email" if user is None else ("wrong_password" if not ok else "disabled")
        AUTH_FAILURES.labels(reason).inc()
        log.info("login_failed", reason=reason)  # never the email or the password
        raise InvalidCredentials("Email or password is incorrect")
    if hasher.needs_rehash(user.password_hash):
        new_hash = await hasher.hash(password)
        async with session.begin():
            await session.execute(
                update(User).where(User.id == user.id).values(password_hash=new_hash)
            )
        log.info("password_rehashed", user_id=str(user.id))
    return user


async def get_active_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    async with session.begin():
        return await session.scalar(select(User).where(User.id == user_id, User.is_active))


ACTIVE_ROLE_SQL = "SELECT role FROM users WHERE id = %s AND is_active"


class ActiveRoles:
    """The role of an active user (None if disabled or gone), read on every authenticated
    request so that disabling an account takes effect at once.

    One prepared statement on the driver pool, and single flight: requests for the same
    user that arrive while a look-up is running share it instead of queueing for pool
    connections. A burst of 500 stream connects with one token costs a few queries, and
    no answer is older than a query that was still running when its request arrived."""

    def __init__(self, driver: DriverPool) -> None:
        self._driver = driver
        self._running: dict[uuid.UUID, asyncio.Task[Role | None]] = {}

    async def get(self, user_id: uuid.UUID) -> Role | None:
        task = self._running.get(user_id)
        if task is None:
            task = asyncio.create_task(self._load(user_id))
            self._running[user_id] = task
            task.add_done_callback(lambda _: self._running.pop(user_id, None))
        # Shielded: one waiter giving up (client gone) does not cancel the others' answer.
        return await asyncio.shield(task)

    async def _load(self, user_id: uuid.UUID) -> Role | None:
        row = await self._driver.fetch_one(ACTIVE_ROLE_SQL, (user_id,))
        return Role(row["role"]) if row else None


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    key: ApiKey
    plaintext: str  # shown once, never stored


async def create_api_key(
    session: AsyncSession, *, name: str, scopes: set[Scope], created_by: uuid.UUID
) -> IssuedApiKey:
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        prefix=prefix,
        secret_hash=_hash_secret(secret),
        name=name,
        scopes=sorted(s.value for s in scopes),
        created_by=created_by,
    )
    async with session.begin():
        session.add(key)
    log.info("api_key_created", api_key_id=str(key.id), scopes=key.scopes)
    return IssuedApiKey(key=key, plaintext=f"{API_KEY_PREFIX}{prefix}_{secret}")


async def list_api_keys(session: AsyncSession) -> list[ApiKey]:
    async with session.begin():
        rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
        return list(rows)


async def revoke_api_key(session: AsyncSession, *, key_id: uuid.UUID, now: datetime) -> ApiKey:
    async with session.begin():
        key = await session.scalar(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
        if key is None:
            raise NotFound("No such API key")
        if key.revoked_at is None:
            key.revoked_at = now
    log.info("api_key_revoked", api_key_id=str(key_id))
    return key


def looks_like_api_key(token: str) -> bool:
    return token.startswith(API_KEY_PREFIX)


async def resolve_api_key(session: AsyncSession, presented: str, *, now: datetime) -> ApiKey | None:
    try:
        prefix, secret = presented.removeprefix(API_KEY_PREFIX).split("_", 1)
    except ValueError:
        return None
    async with session.begin():
        key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if key is None or key.revoked_at is not None:
            return None
        if not hmac.compare_digest(key.secret_hash, _hash_secret(secret)):
            return None
        # Touch at most once a minute: a write on every request would be a hot row.
        await session.execute(
            update(ApiKey)
            .where(
                ApiKey.id == key.id,
                or_(
                    ApiKey.last_used_at.is_(None),
                    ApiKey.last_used_at < now - API_KEY_TOUCH_INTERVAL,
                ),
            )
            .values(last_used_at=func.greatest(now, func.coalesce(ApiKey.last_used_at, now)))
        )
    return key


async def list_users(
    session: AsyncSession, *, after_email: str | None, limit: int, role: Role | None = None
) -> list[User]:
    stmt = select(User).order_by(User.email).limit(limit + 1)
    if after_email is not None:
        stmt = stmt.where(User.email > after_email)
    if role is not None:
        stmt = stmt.where(User.role == role.value)
    async with session.begin():
        return list(await session.scalars(stmt))


async def users_by_id(session: AsyncSession, ids: list[uuid.UUID]) -> list[User]:
    """The users among `ids` that exist (unknown ids are left out), ordered by email."""
    async with session.begin():
        stmt = select(User).where(User.id.in_(ids)).order_by(User.email)
        return list(await session.scalars(stmt))


class CannotModifySelf(Conflict):
    code = "cannot_modify_self"
    title = "Admins cannot demote or disable themselves"


@dataclass(frozen=True, slots=True)
class UserChange:
    user: User
    privileges_changed: bool


async def update_user(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    actor_id: uuid.UUID,
    role: Role | None,
    is_active: bool | None,
    now: datetime,
) -> UserChange:
    """Change role or active flag. The caller must then end the user's sessions and
    tokens when `privileges_changed` (a role change or a disable)."""
    if user_id == actor_id:
        raise CannotModifySelf("Ask another admin")
    async with session.begin():
        user = await session.scalar(select(User).where(User.id == user_id).with_for_update())
        if user is None:
            raise NotFound("No such user")
        changed = (role is not None and role.value != user.role) or (
            is_active is False and user.is_active
        )
        if role is not None:
            user.role = role.value
        if is_active is not None:
            user.is_active = is_active
        user.updated_at = now
    log.info(
        "user_updated",
        user_id=str(user_id),
        role=user.role,
        is_active=user.is_active,
        privileges_changed=changed,
    )
    return UserChange(user=user, privileges_changed=changed)
