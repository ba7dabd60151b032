"""blocked-loop: a blocking call inside `async def` stalls every request on the process."""

from __future__ import annotations

import asyncio
import time

from structlog.testing import capture_logs

from shelfwise.drills.base import Drill, Outcome, metric
from shelfwise.drills.system import DrillSystem


async def nightly_price_report_blocking(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 the bug on purpose: a synchronous call on the loop


async def nightly_price_report_fixed(seconds: float) -> None:
    await asyncio.to_thread(time.sleep, seconds)  # the fix: off the loop


async def _healthz_latency_during(system: DrillSystem, report: float, *, fixed: bool) -> float:
    """How long an unrelated request takes while the report runs beside it."""
    async with system.client() as client:

        async def timed() -> float:
            started = time.perf_counter()
            await client.get("/healthz")
            return time.perf_counter() - started

        probe = asyncio.create_task(timed())
        await asyncio.sleep(0)  # the probe is on its way before the report starts
        work = nightly_price_report_fixed if fixed else nightly_price_report_blocking
        await work(report)
        return await probe


async def run(system: DrillSystem, quick: bool) -> Outcome:
    report = 0.5 if quick else 2.0
    before = metric("shelfwise_event_loop_blocked_total")
    with capture_logs() as logs:
        blocked_latency = await _healthz_latency_during(system, report, fixed=False)
    fixed_latency = await _healthz_latency_during(system, report, fixed=True)
    stalls = [e for e in logs if e["event"] == "event_loop_blocked"]
    moved = metric("shelfwise_event_loop_blocked_total") - before
    return Outcome(
        signal="event_loop_blocked",
        seen=moved >= 1 and any("nightly_price_report_blocking" in e["blocking"] for e in stalls),
        evidence={
            "shelfwise_event_loop_blocked_total (delta)": moved,
            "event_loop_blocked.blocking": stalls[0]["blocking"] if stalls else None,
            "GET /healthz during the blocking report (s)": round(blocked_latency, 3),
            "GET /healthz during the fixed report (s)": round(fixed_latency, 3),
        },
        look_at=[
            "histogram shelfwise_event_loop_lag_seconds (p99 jumps on every route at once)",
            "counter shelfwise_event_loop_blocked_total",
            "log event_loop_blocked: `blocking` and `stack` name the code",
            "GET /v1/admin/debug/profile?seconds=5 while it happens",
        ],
        fix="move blocking or CPU-bound work off the loop: `await asyncio.to_thread(...)`, "
        "an async driver, or a job on the worker",
    )


DRILL = Drill("blocked-loop", "time.sleep inside async def stalls unrelated requests", run)
