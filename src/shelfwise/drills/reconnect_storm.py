"""reconnect-storm: live clients that reconnect at once, in a tight loop, without backoff."""

from __future__ import annotations

import random
import uuid

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.system import DrillSystem, open_system
from shelfwise.identity import service as identity
from shelfwise.identity.models import Role
from shelfwise.transactions import backoff_seconds


def attempts_in(window: float, *, jitter: bool, rng: random.Random) -> int:
    """How often one client retries a refused connect within `window` seconds: every
    50 ms without backoff, or after full-jitter exponential delays (base 1 s, cap 30 s)."""
    elapsed, attempt = 0.0, 0
    while elapsed < window:
        attempt += 1
        elapsed += backoff_seconds(attempt, base=1.0, cap=30.0, rng=rng) + 0.05 if jitter else 0.05
    return attempt


async def _token(system: DrillSystem) -> str:
    ctx = system.ctx
    async with ctx.db.sessions() as session:
        user = await identity.create_user(
            session,
            ctx.hasher,
            email=f"storm-{uuid.uuid4().hex[:8]}@example.test",
            password=uuid.uuid4().hex,
            role=Role.STAFF,
        )
    token, _ = ctx.tokens.issue(user_id=user.id, role=user.role, now=ctx.clock.now())
    return token


async def run(system: DrillSystem, quick: bool) -> Outcome:
    clients = 30 if quick else 200
    limited = system.ctx.settings.model_copy(
        update={"rate_limit_enabled": True, "rate_limit_live_connect": "10/minute"}
    )
    refused_before = metric("shelfwise_rate_limited_total", policy="live_connect")
    connects_before = metric("shelfwise_live_connects_total", transport="poll")
    async with open_system(limited) as storm:
        headers = {"Authorization": f"Bearer {await _token(storm)}"}
        async with storm.client() as client:
            answers = [
                await client.get("/v1/poll?channels=stock", headers=headers) for _ in range(clients)
            ]
    statuses = [answer.status_code for answer in answers]
    retry_after = next(
        (a.headers.get("Retry-After") for a in answers if a.status_code == 429), None
    )
    refused = metric("shelfwise_rate_limited_total", policy="live_connect") - refused_before
    connected = metric("shelfwise_live_connects_total", transport="poll") - connects_before
    rng = random.Random(11)  # noqa: S311 (a reproducible model, not a secret)
    return Outcome(
        signal='shelfwise_rate_limited_total{policy="live_connect"}',
        seen=refused >= 1 and statuses.count(429) == refused and connected >= 1,
        evidence={
            "reconnects": clients,
            "answered 200 / 429": f"{statuses.count(200)} / {statuses.count(429)}",
            "Retry-After on a 429": retry_after,
            "shelfwise_live_connects_total{transport=poll} (delta)": connected,
            'shelfwise_rate_limited_total{policy="live_connect"} (delta)': refused,
            "one client's attempts in 60 s without backoff (model)": attempts_in(
                60, jitter=False, rng=rng
            ),
            "one client's attempts in 60 s with full jitter (model)": attempts_in(
                60, jitter=True, rng=rng
            ),
        },
        look_at=[
            "rate of shelfwise_live_connects_total and shelfwise_live_disconnects_total "
            "(the live disconnect-storm alert)",
            'shelfwise_rate_limited_total{policy="live_connect"}: 429s with Retry-After',
            "gauge shelfwise_live_connections dropping and refilling in a saw-tooth",
        ],
        fix="clients reconnect after a full-jitter exponential backoff (and honour Retry-After "
        "and the SSE `retry:` hint), resuming from their last event id",
    )


DRILL = Drill("reconnect-storm", "live clients reconnect in a tight loop without backoff", run)
