"""Webhooks against a real HTTP receiver on 127.0.0.1 (uvicorn in the test's loop).

The published stream is fanned out to deliveries, and deliveries run on a real in-process
Procrastinate worker (`drain`). Retries are driven without waiting: the job runtime's
clock is "now", so a failed attempt is scheduled in the future; the test then moves the
job's `scheduled_at` to now (time passing) and drains again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from procrastinate import App
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.config import Settings
from shelfwise.context import AppContext
from shelfwise.jobs.runtime import JobRuntime
from shelfwise.webhooks.signing import verify
from shelfwise.webhooks.ssrf import UnsafeWebhookTarget, parse_networks, resolve_target
from tests.live_support import free_port
from tests.support import create_product
from tests.webhook_support import (
    Receiver,
    deliveries,
    drain,
    publish_and_fan_out,
    sample,
    serve_on,
    subscribe,
    time_passes,
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The receiver runs on 127.0.0.1: allow-listed here, refused by default.
    return settings.model_copy(update={"webhook_allowed_networks": ["127.0.0.1/32"]})


@pytest.fixture
def job_clock() -> FixedClock:
    return FixedClock(datetime.now(UTC))


@pytest.fixture
def receiver(job_clock: FixedClock) -> Receiver:
    r = Receiver()
    r.now = int(job_clock.now().timestamp())
    return r


async def test_subscription_crud_secret_shown_once(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    created = await subscribe(client, admin, "http://127.0.0.1:9/hook", ["product.created"])
    assert created["secret"].startswith("whsec_")
    assert created["status"] == "active"
    hook = f"/v1/webhooks/{created['id']}"
    got = await client.get(hook, headers=admin["headers"])
    assert got.status_code == 200
    assert "secret" not in got.json()
    listed = await client.get("/v1/webhooks", headers=admin["headers"])
    assert [w["id"] for w in listed.json()["data"]] == [created["id"]]
    assert "secret" not in listed.json()["data"][0]
    assert created["secret"] not in listed.text

    patched = await client.patch(
        hook, json={"paused": True, "event_types": ["*"]}, headers=admin["headers"]
    )
    assert patched.status_code == 200
    assert (patched.json()["status"], patched.json()["event_types"]) == ("paused", ["*"])
    resumed = await client.patch(hook, json={"paused": False}, headers=admin["headers"])
    assert resumed.json()["status"] == "active"

    bad = await client.post(
        "/v1/webhooks",
        json={"url": "ftp://x.test/", "event_types": ["a.b"]},
        headers=admin["headers"],
    )
    assert bad.status_code == 422
    assert (await client.delete(hook, headers=admin["headers"])).status_code == 204
    assert (await client.get(hook, headers=admin["headers"])).status_code == 404


async def test_signed_delivery_to_a_real_receiver(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_app: App,
    runtime: JobRuntime,
    receiver: Receiver,
) -> None:
    succeeded_before = sample("shelfwise_webhook_deliveries_total", outcome="succeeded")
    async with serve_on(receiver, free_port()) as url:
        hook = await subscribe(client, admin, url, ["product.created"])
        receiver.secret = hook["secret"]
        product = await create_product(client, admin["headers"])
        assert await publish_and_fan_out(ctx, database_url) >= 1
        await drain(job_app, runtime)

    assert receiver.bad_signatures == 0
    assert len(receiver.requests) == 1
    headers, body = receiver.requests[0]
    event = json.loads(body)
    assert event["type"] == "product.created"
    assert event["data"]["product_id"] == product["id"]
    assert headers["shelfwise-event-id"] == event["id"]
    assert headers["shelfwise-signature"].startswith(f"t={receiver.now},v1=")
    # Tampered bodies and other secrets do not verify.
    sig = headers["shelfwise-signature"]
    assert not verify(sig, receiver.secret, body + b" ", now=receiver.now)
    assert not verify(sig, "whsec_other", body, now=receiver.now)
    assert not verify(sig, receiver.secret, body, now=receiver.now + 3600)  # replay window

    [logged] = await deliveries(client, admin, hook["id"])
    assert (logged["status"], logged["attempts"], logged["response_code"]) == ("succeeded", 1, 200)
    assert logged["latency_ms"] is not None
    assert logged["response_body"] == "r" * 1024  # capped
    assert sample("shelfwise_webhook_deliveries_total", outcome="succeeded") == succeeded_before + 1


async def test_receiver_down_for_a_while_then_up(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_app: App,
    runtime: JobRuntime,
    receiver: Receiver,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    hook = await subscribe(client, admin, url, ["product.created"])
    receiver.secret = hook["secret"]
    await create_product(client, admin["headers"])
    await create_product(client, admin["headers"])
    await publish_and_fan_out(ctx, database_url)

    await drain(job_app, runtime)  # nobody listens: connection refused
    logged = await deliveries(client, admin, hook["id"])
    assert {(d["status"], d["attempts"]) for d in logged} == {("retrying", 1)}
    assert all(d["last_error"].startswith("ConnectError") for d in logged)
    await drain(job_app, runtime)  # the retries are not due yet: nothing happens
    assert {d["attempts"] for d in await deliveries(client, admin, hook["id"])} == {1}

    async with serve_on(receiver, port):
        receiver.status = 503  # up, but failing
        await time_passes(ctx)
        await drain(job_app, runtime)
        logged = await deliveries(client, admin, hook["id"])
        assert {(d["status"], d["attempts"], d["response_code"]) for d in logged} == {
            ("retrying", 2, 503)
        }
        receiver.status = 200  # recovered
        await time_passes(ctx)
        await drain(job_app, runtime)

    logged = await deliveries(client, admin, hook["id"])
    assert {(d["status"], d["attempts"]) for d in logged} == {("succeeded", 3)}
    assert len(receiver.processed) == 2
    async with ctx.db.engine.connect() as conn:
        failures = await conn.scalar(text("SELECT consecutive_failures FROM webhook_subscriptions"))
    assert failures == 0


async def test_duplicate_tolerant_receiver_processes_each_event_once(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_app: App,
    runtime: JobRuntime,
    receiver: Receiver,
) -> None:
    receiver.fail_first_time = True  # the receiver did the work, but the 200 was lost
    async with serve_on(receiver, free_port()) as url:
        hook = await subscribe(client, admin, url, ["product.created", "product.updated"])
        receiver.secret = hook["secret"]
        for _ in range(3):
            await create_product(client, admin["headers"])
        await publish_and_fan_out(ctx, database_url)
        await publish_and_fan_out(ctx, database_url)  # a second pass adds nothing
        await drain(job_app, runtime)
        await time_passes(ctx)
        await drain(job_app, runtime)
        logged = await deliveries(client, admin, hook["id"])
        assert {(d["status"], d["attempts"]) for d in logged} == {("succeeded", 2)}
        # A manual redelivery sends the same event id again.
        again = await client.post(
            f"/v1/webhooks/{hook['id']}/deliveries/{logged[0]['id']}/redeliver",
            headers=admin["headers"],
        )
        assert again.status_code == 202, again.text
        await drain(job_app, runtime)

    assert len(receiver.requests) == 3 * 2 + 1
    assert len(receiver.processed) == 3
    assert set(receiver.processed.values()) == {1}
    assert receiver.bad_signatures == 0
    missing = await client.post(
        f"/v1/webhooks/{hook['id']}/deliveries/987654/redeliver", headers=admin["headers"]
    )
    assert missing.status_code == 404


async def test_failing_subscription_is_disabled_with_an_event(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_app: App,
    runtime: JobRuntime,
    receiver: Receiver,
) -> None:
    runtime = JobRuntime(
        settings=runtime.settings.model_copy(update={"webhook_disable_after_failures": 3}),
        db=runtime.db,
        clock=runtime.clock,
        alerts=runtime.alerts,
    )
    disabled_before = sample("shelfwise_webhooks_disabled_total")
    receiver.status = 503
    async with serve_on(receiver, free_port()) as url:
        hook = await subscribe(client, admin, url, ["product.created"])
        receiver.secret = hook["secret"]
        await create_product(client, admin["headers"])
        await create_product(client, admin["headers"])
        await publish_and_fan_out(ctx, database_url)
        await drain(job_app, runtime)  # two failures
        await time_passes(ctx)
        await drain(job_app, runtime)  # the third disables; the fourth job is cancelled
        await create_product(client, admin["headers"])
        await publish_and_fan_out(ctx, database_url)  # no delivery for a disabled hook

    got = (await client.get(f"/v1/webhooks/{hook['id']}", headers=admin["headers"])).json()
    assert got["status"] == "disabled"
    assert got["disabled_at"] is not None
    statuses = sorted(d["status"] for d in await deliveries(client, admin, hook["id"]))
    assert statuses == ["cancelled", "retrying"]
    assert sample("shelfwise_webhooks_disabled_total") == disabled_before + 1
    async with ctx.db.engine.connect() as conn:
        payloads = (
            (
                await conn.execute(
                    text("SELECT payload FROM outbox_events WHERE type = 'webhook.disabled'")
                )
            )
            .scalars()
            .all()
        )
    assert [(p["webhook_id"], p["consecutive_failures"]) for p in payloads] == [(hook["id"], 3)]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "http://192.168.1.1/hook",
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
    ],
)
async def test_ssrf_targets_are_refused_without_allow_list(url: str) -> None:
    with pytest.raises(UnsafeWebhookTarget):
        await resolve_target(url, ())


async def test_allow_list_permits_only_listed_networks() -> None:
    allowed = parse_networks(["127.0.0.1/32"])
    target = await resolve_target("http://127.0.0.1:8080/hook", allowed)
    assert str(target.addresses[0]) == "127.0.0.1"
    with pytest.raises(UnsafeWebhookTarget):
        await resolve_target("http://169.254.169.254/", allowed)
    public = await resolve_target("https://93.184.215.14/hook", ())
    assert target.port == 8080
    assert public.port == 443


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1/h", "http://192.168.1.1/h", "http://169.254.169.254/h"]
)
async def test_api_refuses_private_targets(
    client: httpx.AsyncClient, admin: dict[str, Any], url: str
) -> None:
    response = await client.post(
        "/v1/webhooks", json={"url": url, "event_types": ["*"]}, headers=admin["headers"]
    )
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "webhook_target_refused"


async def test_delivery_to_a_target_that_became_unsafe_fails_without_retry(
    ctx: AppContext,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    database_url: str,
    job_app: App,
    runtime: JobRuntime,
) -> None:
    hook = await subscribe(client, admin, "http://127.0.0.1:9/hook", ["product.created"])
    async with ctx.db.engine.begin() as conn:  # e.g. its DNS now points inside the network
        await conn.execute(text("UPDATE webhook_subscriptions SET url = 'http://10.0.0.1/h'"))
    await create_product(client, admin["headers"])
    await publish_and_fan_out(ctx, database_url)
    await drain(job_app, runtime)
    [logged] = await deliveries(client, admin, hook["id"])
    assert (logged["status"], logged["attempts"]) == ("failed", 1)
    assert "private" in logged["last_error"]
