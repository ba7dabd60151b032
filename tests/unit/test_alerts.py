"""The dead-letter alert channel: a JSON POST when configured, never an exception."""

from __future__ import annotations

import json

import httpx

from shelfwise.jobs.alerts import Alerts


async def test_alert_is_posted_as_json() -> None:
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    alerts = Alerts("https://alerts.test/hook", transport=httpx.MockTransport(receiver))
    await alerts.raise_alert("job_dead_lettered", job_id=7, task="deliver")
    [request] = received
    assert request.method == "POST"
    assert json.loads(request.content) == {
        "alert": "job_dead_lettered",
        "job_id": 7,
        "task": "deliver",
    }


async def test_a_failing_alert_endpoint_is_only_logged() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def error(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    for handler in (down, error):
        alerts = Alerts("https://alerts.test/hook", transport=httpx.MockTransport(handler))
        await alerts.raise_alert("ledger_drift", ledger_levels=[1])


async def test_without_a_url_nothing_is_sent() -> None:
    await Alerts(None).raise_alert("ledger_drift")
