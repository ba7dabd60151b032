"""Jobs on a real Procrastinate worker (in-process) against the per-test database.

Every job kind succeeds; a failing job is retried with jittered exponential backoff whose
`scheduled_at` the test computes from the injected clock and seeded random source (no
waiting: the fixed clock is in the past, so each retry is due at once); after its last
attempt it is a dead letter — listed by the admin API, counted, alerted — and replayable.
Two workers running the same periodic task run each period once.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
from procrastinate import App, JobContext
from prometheus_client import REGISTRY
from sqlalchemy import text

from shelfwise.clock import FixedClock
from shelfwise.context import AppContext
from shelfwise.jobs.alerts import Alerts
from shelfwise.jobs.app import build_job_app
from shelfwise.jobs.defer import defer_in_transaction, defer_many_in_transaction
from shelfwise.jobs.registry import task
from shelfwise.jobs.retry import Backoff, JitteredBackoff
from shelfwise.jobs.runtime import JobRuntime, runtime_of
from shelfwise.jobs.service import report_progress
from shelfwise.jobs.worker import worker_options
from tests.support import create_location, create_product, receive_stock, wait_until

FLAKY_POLICY = Backoff(attempts=3, base_seconds=10, cap_seconds=100)
HEALED: set[str] = set()


@task("test_flaky", queue="test", backoff=FLAKY_POLICY)
async def flaky(context: JobContext, key: str) -> str:
    if key not in HEALED:
        raise RuntimeError(f"downstream unavailable for {key}")
    return "ok"


@task("test_progress", queue="test")
async def progress(context: JobContext, steps: int) -> int:
    rt = runtime_of(context)
    for step in range(1, steps + 1):
        async with rt.db.sessions() as session:
            await report_progress(
                session, int(context.job.id or 0), done=step, total=steps, message="working"
            )
    return steps


@task("test_tick", queue="test", cron="* * * * * *", singleton=True)
async def tick(context: JobContext, timestamp: int) -> int:
    return timestamp


class RecordingAlerts(Alerts):
    """A fake alert channel: remembers instead of posting."""

    def __init__(self) -> None:
        super().__init__(None)
        self.raised: list[tuple[str, dict[str, Any]]] = []

    async def raise_alert(self, alert: str, **fields: Any) -> None:
        self.raised.append((alert, fields))
        await super().raise_alert(alert, **fields)


@pytest.fixture
def alerts() -> RecordingAlerts:
    return RecordingAlerts()


@pytest.fixture
def job_alerts(alerts: RecordingAlerts) -> Alerts:
    return alerts


async def drain(app: App, runtime: JobRuntime) -> None:
    """Run a worker until no job is due (retries scheduled in the past included)."""
    options = worker_options(runtime, "drain")
    await app.run_worker_async(**{**options, "wait": False, "listen_notify": False})


async def defer(ctx: AppContext, task_name: str, **args: Any) -> int:
    async with ctx.db.sessions() as session, session.begin():
        return await defer_in_transaction(session, task_name, args)


async def job_row(ctx: AppContext, job_id: int) -> dict[str, Any]:
    async with ctx.db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status::text, attempts FROM procrastinate_jobs WHERE id = :id"),
                {"id": job_id},
            )
        ).one()
    return {"status": row[0], "attempts": row[1]}


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_every_maintenance_job_succeeds(
    ctx: AppContext, job_app: App, runtime: JobRuntime, alerts: RecordingAlerts
) -> None:
    stamp = {"timestamp": 1_767_225_600}
    job_ids = {
        name: await defer(ctx, name, **stamp)
        for name in (
            "expire_reservations",
            "prune_idempotency_keys",
            "prune_auth_tokens",
            "prune_outbox",
            "prune_finished_jobs",
            "reconcile_ledger",
            "report_low_stock",
            "recover_stalled_jobs",
        )
    }
    await drain(job_app, runtime)
    for name, job_id in job_ids.items():
        assert (await job_row(ctx, job_id))["status"] == "succeeded", name
    assert alerts.raised == []  # a clean ledger raises nothing


async def test_low_stock_report_emits_events_and_ledger_drift_alerts(
    ctx: AppContext,
    job_app: App,
    runtime: JobRuntime,
    alerts: RecordingAlerts,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
) -> None:
    product = await create_product(client, staff["headers"])
    location = await create_location(client, staff["headers"])
    response = await receive_stock(client, staff["headers"], product["id"], location["id"], 2)
    assert response.status_code == 201
    async with ctx.db.engine.begin() as conn:  # tamper: a counter the ledger cannot explain
        await conn.execute(text("UPDATE stock_levels SET on_hand = on_hand + 1"))
    await defer(ctx, "report_low_stock", timestamp=1)
    await defer(ctx, "reconcile_ledger", timestamp=1)
    await drain(job_app, runtime)

    async with ctx.db.engine.connect() as conn:
        low = (
            (await conn.execute(text("SELECT payload FROM outbox_events WHERE type = 'stock.low'")))
            .scalars()
            .all()
        )
    assert [(e["product_id"], e["available"], e["threshold"]) for e in low] == [
        (product["id"], 3, 5)
    ]
    assert [name for name, _ in alerts.raised] == ["ledger_drift"]
    assert counter("shelfwise_ledger_drift_levels") == 1


async def test_retries_back_off_with_jitter_then_dead_letter_alert_and_replay(
    ctx: AppContext,
    job_app: App,
    runtime: JobRuntime,
    alerts: RecordingAlerts,
    clock: FixedClock,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
    staff: dict[str, Any],
) -> None:
    failed_before = counter("shelfwise_jobs_failed_total", task="test_flaky")
    retries_before = counter("shelfwise_job_retries_total", task="test_flaky")
    job_id = await defer(ctx, "test_flaky", key="k1")
    await drain(job_app, runtime)

    assert await job_row(ctx, job_id) == {"status": "failed", "attempts": 3}
    # The retry times are exactly what the policy computes from the injected clock and the
    # same seed: d/2 + uniform(0, d/2) with d = 10 s, then 20 s.
    twin = JitteredBackoff(FLAKY_POLICY, clock=clock, rng=random.Random(7))
    expected = [clock.now() + timedelta(seconds=twin.delay_seconds(n)) for n in (0, 1)]
    async with ctx.db.engine.connect() as conn:
        scheduled = (
            (
                await conn.execute(
                    text(
                        "SELECT at FROM procrastinate_events WHERE job_id = :id "
                        "AND type = 'scheduled' ORDER BY id"
                    ),
                    {"id": job_id},
                )
            )
            .scalars()
            .all()
        )
    assert scheduled == expected
    assert 5 <= (expected[0] - clock.now()).total_seconds() <= 10
    assert 10 <= (expected[1] - clock.now()).total_seconds() <= 20

    # Dead letter: counted, alerted, its error kept.
    assert counter("shelfwise_jobs_failed_total", task="test_flaky") == failed_before + 1
    assert counter("shelfwise_job_retries_total", task="test_flaky") == retries_before + 2
    assert [(name, f["job_id"]) for name, f in alerts.raised] == [("job_dead_lettered", job_id)]

    # Visible to admins only, with the reason.
    listed = await client.get("/v1/admin/jobs?status=failed", headers=admin["headers"])
    assert listed.status_code == 200
    [dead] = listed.json()["data"]
    assert dead["id"] == job_id
    assert dead["task"] == "test_flaky"
    assert dead["last_error"] == "RuntimeError: downstream unavailable for k1"
    forbidden = await client.get("/v1/admin/jobs?status=failed", headers=staff["headers"])
    assert forbidden.status_code == 403

    # Replay once the cause is fixed: it runs again and succeeds.
    HEALED.add("k1")
    replayed = await client.post(f"/v1/admin/jobs/{job_id}/retry", headers=admin["headers"])
    assert replayed.status_code == 202
    assert replayed.json()["status"] == "todo"
    again = await client.post(f"/v1/admin/jobs/{job_id}/retry", headers=admin["headers"])
    assert again.status_code == 409
    assert again.json()["code"] == "job_not_retryable"
    await drain(job_app, runtime)
    assert (await job_row(ctx, job_id))["status"] == "succeeded"
    missing = await client.post("/v1/admin/jobs/999999/retry", headers=admin["headers"])
    assert missing.status_code == 404


async def test_dead_letter_list_is_cursor_paginated(
    ctx: AppContext,
    job_app: App,
    runtime: JobRuntime,
    client: httpx.AsyncClient,
    admin: dict[str, Any],
) -> None:
    ids = [await defer(ctx, "test_flaky", key=f"page-{n}") for n in range(3)]
    await drain(job_app, runtime)
    seen: list[int] = []
    url = "/v1/admin/jobs?status=failed&limit=2"
    while url:
        page = await client.get(url, headers=admin["headers"])
        assert page.status_code == 200
        body = page.json()
        seen += [job["id"] for job in body["data"]]
        url = (
            f"/v1/admin/jobs?status=failed&limit=2&cursor={body['next_cursor']}"
            if body["has_more"]
            else ""
        )
    assert seen == sorted(ids, reverse=True)


async def test_progress_is_readable_while_and_after_running(
    ctx: AppContext,
    job_app: App,
    runtime: JobRuntime,
    client: httpx.AsyncClient,
    staff: dict[str, Any],
    customer: dict[str, Any],
) -> None:
    job_id = await defer(ctx, "test_progress", steps=3)
    before = await client.get(f"/v1/jobs/{job_id}", headers=staff["headers"])
    assert before.json()["status"] == "todo"
    assert before.json()["progress"] is None
    await drain(job_app, runtime)
    after = await client.get(f"/v1/jobs/{job_id}", headers=staff["headers"])
    assert after.status_code == 200
    body = after.json()
    assert body["status"] == "succeeded"
    assert body["progress"]["done"] == 3
    assert body["progress"]["total"] == 3
    assert (await client.get(f"/v1/jobs/{job_id}", headers=customer["headers"])).status_code == 403
    assert (await client.get("/v1/jobs/999999", headers=staff["headers"])).status_code == 404


async def test_a_rolled_back_transaction_leaves_no_job(ctx: AppContext) -> None:
    class Abandon(Exception):
        pass

    async def defer_then_fail() -> None:
        async with ctx.db.sessions() as session, session.begin():
            await defer_in_transaction(session, "report_low_stock", {"timestamp": 1})
            raise Abandon

    with pytest.raises(Abandon):
        await defer_then_fail()
    async with ctx.db.engine.connect() as conn:
        count = await conn.scalar(text("SELECT count(*) FROM procrastinate_jobs"))
    assert count == 0
    async with ctx.db.sessions() as session, session.begin():
        with pytest.raises(LookupError):
            await defer_in_transaction(session, "no_such_task", {})


async def test_many_jobs_deferred_in_one_statement_keep_their_order(ctx: AppContext) -> None:
    async with ctx.db.sessions() as session, session.begin():
        ids = await defer_many_in_transaction(
            session, "report_low_stock", [{"timestamp": n} for n in range(5)]
        )
        assert await defer_many_in_transaction(session, "report_low_stock", []) == []
    assert ids == sorted(ids)
    assert len(set(ids)) == 5
    async with ctx.db.engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT id, args->>'timestamp' FROM procrastinate_jobs ORDER BY id")
            )
        ).all()
    assert [(job_id, int(ts)) for job_id, ts in rows] == list(zip(ids, range(5), strict=True))


async def test_two_workers_run_each_period_of_a_periodic_task_once(
    runtime: JobRuntime, database_url: str, ctx: AppContext
) -> None:
    apps = [
        build_job_app(
            runtime.settings,
            database_url,
            clock=runtime.clock,
            pool_size=3,
            periodic_tasks=("test_tick",),
        )
        for _ in range(2)
    ]
    async with apps[0].open_async(), apps[1].open_async():
        workers = [
            asyncio.create_task(app.run_worker_async(**worker_options(runtime, f"w{n}")))
            for n, app in enumerate(apps)
        ]

        async def three_periods_done() -> bool:
            async with ctx.db.engine.connect() as conn:
                done = await conn.scalar(
                    text(
                        "SELECT count(DISTINCT args->>'timestamp') FROM procrastinate_jobs "
                        "WHERE task_name = 'test_tick' AND status = 'succeeded'"
                    )
                )
            return int(done or 0) >= 3

        await wait_until(three_periods_done, timeout=15, what="three ticks of the periodic task")
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async with ctx.db.engine.connect() as conn:
        per_period = (
            await conn.execute(
                text(
                    "SELECT args->>'timestamp', count(*) FROM procrastinate_jobs "
                    "WHERE task_name = 'test_tick' GROUP BY 1"
                )
            )
        ).all()
    assert len(per_period) >= 3
    assert all(count == 1 for _, count in per_period), per_period
    # Both workers' deferrers tried every tick; procrastinate_periodic_defers' unique
    # (task, periodic id, timestamp) let exactly one job in per period.
