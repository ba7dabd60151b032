"""The event-loop watchdog names the code that blocks the loop; the admin debug endpoints."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from shelfwise.app import create_app
from shelfwise.clock import FixedClock
from shelfwise.config import Environment, Settings
from shelfwise.identity.models import Role
from shelfwise.observability.metrics import LOOP_BLOCKED, LOOP_LAG
from tests.support import make_user, wait_until

PRODUCTION_SECRETS = ("jwt_secret", "cursor_secret", "session_secret")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "loop_lag_sample_seconds": 0.02,
            "loop_blocked_threshold_seconds": 0.15,
            "rate_limit_debug": "1000/minute",
            "debug_profile_max_seconds": 2,
        }
    )


def block_the_loop_on_purpose() -> None:
    time.sleep(0.6)  # the mistake under test: a blocking call inside `async def`


async def blocking_route() -> dict[str, str]:
    block_the_loop_on_purpose()
    return {"status": "blocked"}


def _sample(metric: Any, suffix: str) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith(suffix):
                return float(sample.value)
    return 0.0


async def test_a_blocked_loop_is_logged_with_the_blocking_function(
    app: Any, client: httpx.AsyncClient
) -> None:
    # Registered here only: the test-only route never exists in the application.
    app.add_api_route("/test-only/block-the-loop", blocking_route)
    await client.get("/healthz")  # the first request builds the middleware stack: warm up
    samples = _sample(LOOP_LAG, "_count")

    async def sampler_beats() -> bool:  # in-process requests never yield to the loop's timers
        return _sample(LOOP_LAG, "_count") > samples

    await wait_until(sampler_beats, timeout=5, what="a fresh heartbeat")
    blocked_before = _sample(LOOP_BLOCKED, "_total")
    lag_before = _sample(LOOP_LAG, "_sum")
    with capture_logs() as logs:
        response = await client.get("/test-only/block-the-loop")
        assert response.status_code == 200

        async def reported() -> bool:
            return any(
                entry["event"] == "event_loop_blocked"
                and "block_the_loop_on_purpose" in entry["blocking"]
                for entry in logs
            )

        await wait_until(reported, timeout=5, what="event_loop_blocked")
    entry = next(
        entry
        for entry in logs
        if entry["event"] == "event_loop_blocked" and "block_the_loop" in entry["blocking"]
    )
    assert "block_the_loop_on_purpose" in entry["blocking"]
    assert "blocking_route" in entry["stack"]
    assert entry["blocked_ms"] >= 150
    assert _sample(LOOP_BLOCKED, "_total") >= blocked_before + 1

    # The sampler was late by about the whole block, and says so once the loop runs again.
    async def lag_observed() -> bool:
        return _sample(LOOP_LAG, "_sum") - lag_before >= 0.4

    await wait_until(lag_observed, timeout=5, what="the lag histogram to see the stall")


async def test_debug_tasks_lists_running_tasks_for_admins_only(
    client: httpx.AsyncClient, admin: dict[str, Any], customer: dict[str, Any]
) -> None:
    response = await client.get("/v1/admin/debug/tasks", headers=admin["headers"])
    assert response.status_code == 200
    body = response.json()
    assert body["count"] >= 1
    names = {task["name"] for task in body["tasks"]}
    assert "loop-lag-sampler" in names
    sampler = next(task for task in body["tasks"] if task["name"] == "loop-lag-sampler")
    assert any("_sample" in frame for frame in sampler["stack"])
    assert response.headers["cache-control"] == "private, no-store"

    refused = await client.get("/v1/admin/debug/tasks", headers=customer["headers"])
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    anonymous = await client.get("/v1/admin/debug/tasks")
    assert anonymous.status_code == 401


async def test_debug_profile_answers_html_or_speedscope(
    client: httpx.AsyncClient, admin: dict[str, Any]
) -> None:
    headers = admin["headers"]
    speedscope = await client.get(
        "/v1/admin/debug/profile", params={"seconds": 0.2, "format": "speedscope"}, headers=headers
    )
    assert speedscope.status_code == 200, speedscope.text
    assert "speedscope" in speedscope.json()["$schema"]
    html = await client.get("/v1/admin/debug/profile", params={"seconds": 0.1}, headers=headers)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")

    too_long = await client.get("/v1/admin/debug/profile", params={"seconds": 3}, headers=headers)
    assert too_long.status_code == 200
    assert too_long.headers["x-profile-seconds"] == "2"  # cut to debug_profile_max_seconds
    bad_format = await client.get(
        "/v1/admin/debug/profile", params={"format": "pdf"}, headers=headers
    )
    assert bad_format.status_code == 422


@pytest.fixture
async def locked_down(settings: Settings, clock: FixedClock) -> AsyncIterator[httpx.AsyncClient]:
    """Debug endpoints off (production's default), and a tight limit to prove it exists."""
    application = create_app(
        settings.model_copy(update={"debug_endpoints_enabled": False}), clock=clock
    )
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            c.app = application  # type: ignore[attr-defined]
            yield c


async def test_debug_endpoints_are_absent_when_turned_off(locked_down: httpx.AsyncClient) -> None:
    ctx = locked_down.app.state.ctx  # type: ignore[attr-defined]
    admin = await make_user(ctx, Role.ADMIN)
    for path in ("/v1/admin/debug/tasks", "/v1/admin/debug/profile"):
        response = await locked_down.get(path, headers=admin["headers"])
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_debug_endpoints_are_rate_limited(settings: Settings, clock: FixedClock) -> None:
    application = create_app(
        settings.model_copy(update={"rate_limit_debug": "2/minute"}), clock=clock
    )
    async with application.router.lifespan_context(application):
        admin = await make_user(application.state.ctx, Role.ADMIN)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            statuses = [
                (await c.get("/v1/admin/debug/tasks", headers=admin["headers"])).status_code
                for _ in range(3)
            ]
    assert statuses == [200, 200, 429]


def test_debug_endpoints_are_documented_with_problem_responses(app: Any) -> None:
    paths = app.openapi()["paths"]
    profile = paths["/v1/admin/debug/profile"]["get"]
    assert {"404", "409", "429"} <= set(profile["responses"])
    assert "application/problem+json" in profile["responses"]["409"]["content"]


async def test_drill_routes_are_admin_only_and_absent_in_production(
    client: httpx.AsyncClient, settings: Settings, clock: FixedClock
) -> None:
    ctx = client._transport.app.state.ctx  # type: ignore[attr-defined]
    customer = await make_user(ctx, Role.CUSTOMER)
    admin = await make_user(ctx, Role.ADMIN)
    block = "/v1/admin/debug/drill/block-loop"
    # Not in the OpenAPI schema (so not in the authz matrix either): checked here.
    assert (await client.post(block, params={"seconds": 0.01})).status_code == 401
    refused = await client.post(block, params={"seconds": 0.01}, headers=customer["headers"])
    assert refused.status_code == 403
    allowed = await client.post(block, params={"seconds": 0.01}, headers=admin["headers"])
    assert allowed.status_code == 200
    assert (
        await client.post(block, params={"seconds": 60}, headers=admin["headers"])
    ).status_code == 422
    # Production with the debug endpoints turned on: they answer, the drills do not exist.
    # Validated afresh: model_copy would keep the cached `is_production` of the original.
    production = Settings.model_validate(
        {
            **settings.model_dump(),
            "env": Environment.PRODUCTION,
            "debug_endpoints_enabled": True,
            **{name: f"{name}-of-this-test-only-0123456789" for name in PRODUCTION_SECRETS},
        }
    )
    assert production.is_production
    application = create_app(production, clock=clock)
    async with application.router.lifespan_context(application):
        boss = await make_user(application.state.ctx, Role.ADMIN)
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="https://shelfwise.test") as c:
            tasks = await c.get("/v1/admin/debug/tasks", headers=boss["headers"])
            drill = await c.post(block, params={"seconds": 5}, headers=boss["headers"])
    assert tasks.status_code == 200
    assert drill.status_code == 404
    assert drill.headers["content-type"] == "application/problem+json"
