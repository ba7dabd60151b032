"""Sign-in use cases: token sign-in (API clients) and session sign-in (the dashboard).

The router checks the Origin, calls one of these, and renders the answer (cookies, body).
Each takes what it needs explicitly; none reads the application context.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from shelfwise.identity import refresh, service
from shelfwise.identity.csrf import csrf_token
from shelfwise.identity.models import User
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.identity.refresh import RefreshPolicy
from shelfwise.identity.sessions import SessionRecord, SessionStore
from shelfwise.identity.throttle import LoginThrottle
from shelfwise.identity.tokens import TokenIssuer


@dataclass(frozen=True, slots=True)
class Client:
    """Who is signing in, as far as the sign-in records keep it."""

    user_agent: str
    ip: str


@dataclass(frozen=True, slots=True)
class TokenSignIn:
    user: User
    access_token: str
    access_expires_at: datetime
    refresh_token: str


@dataclass(frozen=True, slots=True)
class SessionSignIn:
    user: User
    session_token: str
    record: SessionRecord
    csrf_token: str


async def check_password(
    session: AsyncSession,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    *,
    email: str,
    password: str,
) -> User:
    """The account behind `email` and `password`; repeated failures per account are
    throttled (`identity/throttle.py`)."""
    await throttle.check(email)
    try:
        return await service.authenticate(session, hasher, email=email, password=password)
    except service.InvalidCredentials:
        await throttle.failed(email)
        raise


async def sign_in_with_tokens(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    client: Client,
    now: datetime,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    tokens: TokenIssuer,
    refresh_policy: RefreshPolicy,
) -> TokenSignIn:
    """A short-lived access token and the first token of a new refresh family."""
    user = await check_password(session, hasher, throttle, email=email, password=password)
    access, expires_at = tokens.issue(user_id=user.id, role=user.role, now=now)
    _, refresh_token = await refresh.start_family(
        session,
        user_id=user.id,
        now=now,
        policy=refresh_policy,
        user_agent=client.user_agent,
        ip=client.ip,
    )
    return TokenSignIn(user, access, expires_at, refresh_token)


async def sign_in_with_session(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    previous_token: str | None,
    client: Client,
    now: datetime,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    sessions: SessionStore,
    csrf_secret: bytes,
) -> SessionSignIn:
    """A new browser session. A session the browser already had is ended first (its id
    is never reused: no session fixation)."""
    user = await check_password(session, hasher, throttle, email=email, password=password)
    if previous_token and (old := await sessions.resolve(previous_token, now=now)):
        await sessions.revoke(old.id, user_id=None, reason="rotated", now=now)
    token, record = await sessions.create(
        user.id, now=now, user_agent=client.user_agent, ip=client.ip
    )
    return SessionSignIn(user, token, record, csrf_token(csrf_secret, record.id))
