"""Rate limits and per-client concurrency caps, on the `limits` library.

Storage is in memory for one process, or Redis when `REDIS_URL` is set, so a limit holds
across every process and instance that shares it. Policies are named; each answers with
IETF draft headers (`RateLimit-Policy: "login";q=20;w=60` and `RateLimit: "login";r=3;t=41`)
and, when exhausted, `429` with `Retry-After`.

Where limits apply:
- anonymous requests: per client IP, in `RateLimitMiddleware` (before any database work);
- authenticated requests: per principal, right after authentication (a dependency), so
  many users behind one NAT do not share one budget;
- sensitive routes (login, register, refresh): their own tighter policies, per IP.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import ConnectionPool
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shelfwise.errors import RateLimited
from shelfwise.http.problems import problem
from shelfwise.observability.metrics import RATE_LIMITED
from shelfwise.shared_state import (
    REDIS_DOWN,
    REDIS_RETRY_SECONDS,
    redis_failed,
    redis_ok,
    redis_pool,
)

STATE_KEY = "ratelimit"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    items: tuple[RateLimitItem, ...]

    @classmethod
    def parse(cls, name: str, spec: str) -> Policy:
        return cls(name, tuple(parse_many(spec)))


@dataclass(frozen=True, slots=True)
class Decision:
    policy: Policy
    item: RateLimitItem  # the tier closest to exhaustion
    allowed: bool
    remaining: int
    reset_after: int  # seconds until the window frees up

    def headers(self) -> dict[str, str]:
        name = self.policy.name
        window = self.item.get_expiry()
        headers = {
            "RateLimit-Policy": f'"{name}";q={self.item.amount};w={window}',
            "RateLimit": f'"{name}";r={self.remaining};t={self.reset_after}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(self.reset_after, 1))
        return headers


class RateLimiter:
    """Moving-window limits in Redis (shared by every instance) or in memory.

    Redis unreachable: the limits **fail open** to this process's own memory (still a
    limit per instance, not shared) and Redis is re-tried after `REDIS_RETRY_SECONDS`;
    a request never waits on, or fails because of, a Redis outage (`shared_state.py`)."""

    def __init__(
        self, redis_url: str | None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # The Redis pool is ours, not the storage's: `limits` offers no way to close it,
        # and an unclosed pool leaks a connection per worker at shutdown.
        self._pool: ConnectionPool | None = None
        self.storage: Storage
        self._local = MovingWindowRateLimiter(MemoryStorage())
        if redis_url:
            self._pool = redis_pool(redis_url)
            options: dict[str, Any] = {"connection_pool": self._pool}
            self.storage = RedisStorage(_limits_uri(redis_url), implementation="redispy", **options)
            self._limiter = MovingWindowRateLimiter(self.storage)
        else:
            self.storage = MemoryStorage()
            self._limiter = self._local = MovingWindowRateLimiter(self.storage)
        self._clock = clock
        self._skip_redis_until = float("-inf")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    @property
    def degraded(self) -> bool:
        """Counting in this process only, because Redis is unreachable."""
        return self._limiter is not self._local and self._clock() < self._skip_redis_until

    async def _decide(
        self, limiter: MovingWindowRateLimiter, policy: Policy, key: str, allowed: bool
    ) -> Decision:
        tightest: Decision | None = None
        for item in policy.items:
            stats = await limiter.get_window_stats(item, policy.name, key)
            reset_after = max(0, math.ceil(stats.reset_time - time.time()))
            candidate = Decision(policy, item, allowed, max(stats.remaining, 0), reset_after)
            if tightest is None or (candidate.remaining, -reset_after) < (
                tightest.remaining,
                -tightest.reset_after,
            ):
                tightest = candidate
        assert tightest is not None
        return tightest

    async def _shared(
        self, use: Callable[[MovingWindowRateLimiter], Awaitable[Decision]]
    ) -> Decision:
        """`use` on the shared limiter; on this process's own while Redis is down."""
        if self._limiter is self._local or self.degraded:
            return await use(self._local)
        try:
            decision = await use(self._limiter)
        except REDIS_DOWN as exc:
            redis_failed("rate_limits", exc)
            self._skip_redis_until = self._clock() + REDIS_RETRY_SECONDS
            return await use(self._local)
        redis_ok("rate_limits")
        return decision

    async def hit(self, policy: Policy, key: str) -> Decision:
        """Consume one unit from every tier; refused if any tier is exhausted."""

        async def use(limiter: MovingWindowRateLimiter) -> Decision:
            allowed = True
            for item in policy.items:
                if not await limiter.test(item, policy.name, key):
                    allowed = False
            if allowed:
                for item in policy.items:
                    allowed = await limiter.hit(item, policy.name, key) and allowed
            return await self._decide(limiter, policy, key, allowed)

        return await self._shared(use)

    async def peek(self, policy: Policy, key: str) -> Decision:
        """Would a hit be allowed? Consumes nothing."""

        async def use(limiter: MovingWindowRateLimiter) -> Decision:
            allowed = True
            for item in policy.items:
                allowed = await limiter.test(item, policy.name, key) and allowed
            return await self._decide(limiter, policy, key, allowed)

        return await self._shared(use)

    async def reset(self) -> None:
        await self.storage.reset()
        if self._limiter is not self._local:
            await self._local.storage.reset()


def _limits_uri(redis_url: str) -> str:
    # limits names its async backends `async+redis://`.
    return "async+" + redis_url if not redis_url.startswith("async+") else redis_url


def client_ip(scope: Scope) -> str:
    """The peer address — already rewritten from X-Forwarded-For by the proxy-headers
    middleware when, and only when, the peer is a trusted proxy."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def remember(scope: Scope, decision: Decision) -> None:
    """Keep the tightest decision of this request, for the response headers."""
    state = scope.setdefault("state", {})
    current: Decision | None = state.get(STATE_KEY)
    if current is None or decision.remaining <= current.remaining:
        state[STATE_KEY] = decision


def refuse(decision: Decision) -> RateLimited:
    RATE_LIMITED.labels(decision.policy.name).inc()
    return RateLimited(
        f"Rate limit '{decision.policy.name}' exceeded; retry in {decision.reset_after}s",
        headers=decision.headers(),
        policy=decision.policy.name,
    )


class Subjects(Protocol):
    """`identity.tokens.TokenIssuer`, as far as this module needs it."""

    def subject(self, token: str) -> UUID | None: ...


def bearer_subject(tokens: Subjects) -> Callable[[Scope], str | None]:
    """The in-flight cap's key for a request with a validly signed access token: its
    user, not its address. Checked by signature only (no database), so it costs
    microseconds before any work is admitted; an API key or a session cookie cannot be
    checked without a look-up and stays keyed by address."""

    def identify(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer":
                    return None
                subject = tokens.subject(token.strip())
                return None if subject is None else f"user:{subject}"
        return None

    return identify


def _has_credentials(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization" or (name == b"cookie" and b"__Host-session=" in value):
            return True
    return False


class RateLimitMiddleware:
    """Per-IP limit for anonymous requests, a cap on concurrent requests per client, and
    the RateLimit headers for whatever policy a request was measured against.

    The concurrency cap's "client" is the signed-in user when `identify` names one (a
    validly signed access token), else the address: 2,000 buyers behind one shop's NAT
    are 2,000 clients, not one (docs/decisions)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        anonymous: Policy,
        max_concurrent: int,
        identify: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.anonymous = anonymous
        self.max_concurrent = max_concurrent
        self.identify = identify
        self.in_flight: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope)
        client = (self.identify(scope) if self.identify is not None else None) or ip
        if self.in_flight[client] >= self.max_concurrent:
            RATE_LIMITED.labels("concurrency").inc()
            response = problem(
                429,
                "too_many_concurrent_requests",
                f"At most {self.max_concurrent} requests in flight per client",
                scope,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        if not _has_credentials(scope):
            decision = await self.limiter.hit(self.anonymous, ip)
            remember(scope, decision)
            if not decision.allowed:
                exc = refuse(decision)
                response = problem(
                    429,
                    exc.code,
                    exc.detail,
                    scope,
                    headers=exc.headers,
                    policy=decision.policy.name,
                )
                await response(scope, receive, send)
                return

        counted = True

        def release() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.in_flight[client] -= 1
                if self.in_flight[client] <= 0:
                    del self.in_flight[client]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                decision = scope.get("state", {}).get(STATE_KEY)
                if decision is not None:
                    for name, value in decision.headers().items():
                        headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/event-stream"):
                    # An open stream is not a request in flight: it is bounded by the
                    # live connect rate and the server's connection cap instead. Counted,
                    # 256 streams from one office NAT would lock it out of the API.
                    release()
            await send(message)

        self.in_flight[client] += 1
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            release()
