"""Webhook secret rotation (two `v1` signatures during the grace window, one after) and the
fan-out waking on the relay's publish instead of its poll.

The API runs on the test's fixed clock (`START`); the job runtime gets its own fixed clock
set to the same instant, so the test decides when the grace window is over.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from procrastinate import App

from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.jobs.worker import run_worker
from shelfwise.webhooks.signing import signature, verify
from tests.conftest import START
from tests.live_support import free_port
from tests.support import create_product, wait_until
from tests.webhook_support import (
    Receiver,
    deliveries,
    drain,
    publish_and_fan_out,
    serve_on,
    subscribe,
)

PROBLEM = "application/problem+json"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allowed_networks": ["127.0.0.1/32"]})


@pytest.fixture
def job_clock() -> FixedClock:
    return FixedClock(START)


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value)


def v1_values(header: str) -> list[str]:
    return [part[3:] for part in header.split(",") if part.startswith("v1=")]


async def rotate(
    client: httpx.AsyncClient, headers: dict[str, str], webhook_id: str, **body: Any
) -> httpx.Response:
    return await client.post(
        f"/v1/webhooks/{webhook_id}/rotate-secret", json=body or None, headers=headers
    )


async def test_rotate_secret_returns_the_new_secret_once(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    hook = await subscribe(client, admin, "http://127.0.0.1:9/hook", ["product.created"])

    rotated = await rotate(client, admin["headers"], hook["id"])
    assert rotated.status_code == 200, rotated.text
    assert rotated.headers["cache-control"] == "private, no-store"
    body = rotated.json()
    assert body["id"] == hook["id"]
    assert body["secret"].startswith("whsec_")
    assert body["secret"] != hook["secret"]
    assert instant(body["previous_secret_expires_at"]) == START + timedelta(hours=24)

    got = await client.get(f"/v1/webhooks/{hook['id']}", headers=admin["headers"])
    assert "secret" not in got.json()
    assert body["secret"] not in got.text
    assert hook["secret"] not in got.text
    assert got.json()["previous_secret_expires_at"] == body["previous_secret_expires_at"]

    short = await rotate(client, admin["headers"], hook["id"], grace_seconds=60)
    assert instant(short.json()["previous_secret_expires_at"]) == START + timedelta(seconds=60)
    at_once = await rotate(client, admin["headers"], hook["id"], grace_seconds=0)
    assert at_once.status_code == 200
    assert at_once.json()["previous_secret_expires_at"] is None
    assert len({hook["secret"], body["secret"], short.json()["secret"]}) == 3


@pytest.mark.parametrize(
    "body",
    [
        {"grace_seconds": -1},
        {"grace_seconds": 7 * 24 * 3600 + 1},
        {"grace_seconds": "a day"},
        {"grace_seconds": 1.5},
        {"grace": 60},
        [60],
        b'{"grace_seconds": ',  # not JSON
    ],
)
async def test_rotate_secret_refuses_a_bad_grace(
    client: httpx.AsyncClient, admin: dict[str, Any], body: Any
) -> None:
    hook = await subscribe(client, admin, "http://127.0.0.1:9/hook", ["*"])
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        f"/v1/webhooks/{hook['id']}/rotate-secret",
        content=raw,
        headers={**admin["headers"], "Content-Type": "application/json"},
    )
    # Malformed JSON is a 400 (the body is not JSON at all); JSON of the wrong shape, 422.
    expected = (400, "malformed_json") if isinstance(body, bytes) else (422, "validation_failed")
    assert response.status_code == expected[0], response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == expected[1]


async def test_rotate_secret_unknown_webhook_and_non_admins(
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    staff: dict[str, Any],
    customer: dict[str, Any],
) -> None:
    missing = await rotate(client, admin["headers"], "00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM)
    assert missing.json()["code"] == "webhook_not_found"
    not_a_uuid = await rotate(client, admin["headers"], "nope")
    assert not_a_uuid.status_code == 422

    hook = await subscribe(client, admin, "http://127.0.0.1:9/hook", ["*"])
    for user in (staff, customer):
        refused = await rotate(client, user["headers"], hook["id"])
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith(PROBLEM)
    anonymous = await client.post(f"/v1/webhooks/{hook['id']}/rotate-secret")
    assert anonymous.status_code == 401


async def test_both_secrets_sign_during_the_grace_window_then_only_the_new_one(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_app: App,
    runtime: JobRuntime,
    job_clock: FixedClock,
) -> None:
    receiver = Receiver()
    async with serve_on(receiver, free_port()) as url:
        hook = await subscribe(client, admin, url, ["product.created"])
        old = hook["secret"]
        new = (await rotate(client, admin["headers"], hook["id"], grace_seconds=3600)).json()[
            "secret"
        ]
        receiver.secret, receiver.now = new, int(job_clock.now().timestamp())
        await create_product(client, admin["headers"])
        await publish_and_fan_out(ctx, database_url)
        await drain(job_app, runtime)

        job_clock.advance(timedelta(seconds=3600))  # the window ends
        receiver.now = int(job_clock.now().timestamp())
        await create_product(client, admin["headers"])
        await publish_and_fan_out(ctx, database_url)
        await drain(job_app, runtime)

    assert receiver.bad_signatures == 0
    (during, body1), (after, body2) = receiver.requests
    sig1, sig2 = during["shelfwise-signature"], after["shelfwise-signature"]
    t1, t2 = int(job_clock.now().timestamp()) - 3600, int(job_clock.now().timestamp())
    # During the window: new first, then old; a receiver holding either secret accepts.
    assert v1_values(sig1) == [signature(new, t1, body1), signature(old, t1, body1)]
    assert verify(sig1, new, body1, now=t1)
    assert verify(sig1, old, body1, now=t1)
    # After it: only the new secret signs.
    assert v1_values(sig2) == [signature(new, t2, body2)]
    assert verify(sig2, new, body2, now=t2)
    assert not verify(sig2, old, body2, now=t2)
    assert {d["status"] for d in await deliveries(client, admin, hook["id"])} == {"succeeded"}


async def test_fanout_wakes_when_the_relay_publishes_not_at_its_poll(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_clock: FixedClock,
) -> None:
    # The fan-out and job polls are a minute: only the wake-ups (the relay's hook to the
    # fan-out, NOTIFY to the job worker) can deliver within the deadline below. (The relay
    # keeps its short poll: it only checks `stop` between waits.)
    settings = ctx.settings.model_copy(
        update={
            "webhook_fanout_poll_seconds": 60.0,
            "worker_poll_seconds": 60.0,
            "worker_concurrency": 2,
            "worker_shutdown_timeout_seconds": 5.0,
        }
    )
    receiver = Receiver()
    receiver.now = int(job_clock.now().timestamp())
    stop = asyncio.Event()
    async with serve_on(receiver, free_port()) as url:
        hook = await subscribe(client, admin, url, ["product.created"])
        receiver.secret = hook["secret"]
        worker = asyncio.create_task(
            run_worker(settings, database_url, stop, name="wake-test", clock=job_clock)
        )
        try:
            # A first product is delivered by whichever pass sees it (the fan-out's first
            # pass at start-up races the relay's first publish). After that the fan-out
            # is idle in its 60 s wait, and only a wake-up can deliver the second.
            for expected in (1, 2):
                product = await create_product(client, admin["headers"])

                async def delivered(n: int = expected) -> bool:
                    return len(receiver.requests) >= n

                # The first also waits for the worker to start; the second, only for wake-ups.
                deadline = 30.0 if expected == 1 else 10.0
                await wait_until(delivered, timeout=deadline, what=f"delivery {expected}")
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)

    assert len(receiver.requests) == 2
    _, body = receiver.requests[1]
    assert product["id"].encode() in body
    assert receiver.bad_signatures == 0
