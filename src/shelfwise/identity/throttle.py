"""Login throttling per account, on top of the per-IP route limit.

Failures are counted per *email as typed* (hashed), whether or not an account exists, so
the lockout itself reveals nothing. The policy has tiers (5/minute; 20/hour; 100/day by
default): the more an account is attacked, the longer it stays locked.
"""

from __future__ import annotations

import hashlib

import structlog

from shelfwise.http.ratelimit import Policy, RateLimiter, refuse
from shelfwise.identity.service import normalise_email
from shelfwise.observability.metrics import SECURITY_EVENTS

log = structlog.get_logger("shelfwise.identity.throttle")


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, policy: Policy, *, enabled: bool = True) -> None:
        self._limiter = limiter
        self._policy = policy
        self._enabled = enabled

    @staticmethod
    def _key(email: str) -> str:
        return hashlib.sha256(normalise_email(email).encode()).hexdigest()

    async def check(self, email: str) -> None:
        if not self._enabled:
            return
        decision = await self._limiter.peek(self._policy, self._key(email))
        if not decision.allowed:
            SECURITY_EVENTS.labels("login_lockout").inc()
            log.warning("security_login_locked", retry_after=decision.reset_after)
            raise refuse(decision)

    async def failed(self, email: str) -> None:
        if self._enabled:
            await self._limiter.hit(self._policy, self._key(email))
