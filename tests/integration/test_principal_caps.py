"""The in-flight cap per client keys on the signed-in user, not on the shared address.

Issue 10: 2,000 buyers with 20 accounts behind one shop's address got 1,744 answers 429 from
the in-flight cap of 256 per IP. Scaled down (400 buyers, 20 accounts, a cap of 50), the
requests are held inside the application until every one of them has either entered or
been refused, so "in flight at once" is exact, not a matter of timing:

- validly signed access tokens: each account has 20 in flight, under its cap: none shed;
- the same crowd without credentials, or with a forged signature: one client (the
  address), so exactly 400 - 50 are shed — the control that shows the test can fail;
- one account alone is still capped at 50.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
from starlette.types import Receive, Scope, Send

from shelfwise.http.ratelimit import Policy, RateLimiter, RateLimitMiddleware, bearer_subject
from shelfwise.identity.tokens import TokenIssuer
from tests.support import wait_until

BUYERS = 400
ACCOUNTS = 20
CAP = 50
SHOP_ADDRESS = ("203.0.113.7", 40000)
NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)

ISSUER = TokenIssuer(
    keys={"k1": b"principal-caps-test-key-0123456789abcdef"},
    signing_kid="k1",
    issuer="shelfwise",
    ttl=timedelta(minutes=10),
)
FORGER = TokenIssuer(
    keys={"k1": b"not-the-shop-key-0123456789abcdef-xyz"},
    signing_kid="k1",
    issuer="shelfwise",
    ttl=timedelta(minutes=10),
)


def bearer(issuer: TokenIssuer, user: uuid.UUID) -> dict[str, str]:
    token, _ = issuer.issue(user_id=user, role="customer", now=NOW)
    return {"Authorization": f"Bearer {token}"}


async def storm(headers_for: Callable[[int], dict[str, str]], count: int = BUYERS) -> Counter[int]:
    """`count` concurrent requests from one address, all held in flight together."""
    gate = asyncio.Event()
    entered = 0

    async def held(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal entered
        entered += 1
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    limiter = RateLimiter(None)
    app = RateLimitMiddleware(
        held,
        limiter=limiter,
        anonymous=Policy.parse("anonymous", "100000/minute"),
        max_concurrent=CAP,
        identify=bearer_subject(ISSUER),
    )
    transport = httpx.ASGITransport(app=app, client=SHOP_ADDRESS)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        requests = [
            asyncio.create_task(client.get("/v1/products", headers=headers_for(i)))
            for i in range(count)
        ]

        async def all_decided() -> bool:
            return entered + sum(task.done() for task in requests) == count

        await wait_until(all_decided, timeout=20, what="every request admitted or refused")
        gate.set()
        responses = await asyncio.gather(*requests)
    assert app.in_flight == Counter(), "every admitted request was released"
    return Counter(response.status_code for response in responses)


async def test_buyers_behind_one_address_are_capped_per_account_not_per_address() -> None:
    accounts = [uuid.uuid4() for _ in range(ACCOUNTS)]
    tokens = [bearer(ISSUER, user) for user in accounts]
    statuses = await storm(lambda i: tokens[i % ACCOUNTS])
    assert statuses == Counter({200: BUYERS})


async def test_without_a_verifiable_token_the_address_is_the_client() -> None:
    anonymous = await storm(lambda i: {})
    assert anonymous == Counter({200: CAP, 429: BUYERS - CAP})
    # A token that does not carry the shop's signature names nobody: no fresh budget.
    forged = [bearer(FORGER, uuid.uuid4()) for _ in range(ACCOUNTS)]
    statuses = await storm(lambda i: forged[i % ACCOUNTS])
    assert statuses == Counter({200: CAP, 429: BUYERS - CAP})


async def test_one_account_is_still_capped() -> None:
    token = bearer(ISSUER, uuid.uuid4())
    statuses = await storm(lambda i: token, count=CAP + 10)
    assert statuses == Counter({200: CAP, 429: 10})
