"""The drills whose failure is visible over HTTP, against a running server (`--url`).

Same lessons as their in-process twins, with the served process's own signals: the
failure comes from the admin drill routes (observability/drill_routes.py) or plain
requests; the evidence from `/metrics` deltas and the server's log file. A drill run
against a server with production thresholds takes longer (it holds connections past
the server's leak threshold, blocks past its loop threshold); the evidence says why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from shelfwise.drills.base import Outcome
from shelfwise.drills.served import ServedSystem, open_served

ServedRun = Callable[[ServedSystem, bool], Awaitable[Outcome]]
LOG_FLUSH_SECONDS = 3.0  # how long a signal may take to reach the log file


async def _until_logged(system: ServedSystem, *needles: str) -> list[str]:
    """The log lines with `needles`, waiting (bounded) for the server to write them."""
    deadline = time.monotonic() + LOG_FLUSH_SECONDS
    while True:
        lines = system.log_lines(*needles)
        if lines or system.log_file is None or time.monotonic() > deadline:
            return lines
        await asyncio.sleep(0.05)


async def _healthz_worst_wait(system: ServedSystem, block: float, *, fixed: bool) -> float:
    """The worst wait of a `GET /healthz` sent every 20 ms while the server sleeps
    `block` seconds on its loop (or, `fixed`, in a thread)."""
    request = system.client.post(
        "/v1/admin/debug/drill/block-loop",
        params={"seconds": block, "fixed": fixed},
        headers=system.admin_headers,
    )
    blocking = asyncio.ensure_future(request)
    worst = 0.0
    while not blocking.done():
        due = time.perf_counter()
        await system.client.get("/healthz")
        worst = max(worst, time.perf_counter() - due)
        await asyncio.sleep(0.02)
    (await blocking).raise_for_status()
    return worst


async def blocked_loop(system: ServedSystem, quick: bool) -> Outcome:
    block = 1.0 if quick else 3.0  # over the default 0.5 s `loop_blocked_threshold_seconds`
    before = await system.metrics()
    blocked_wait = await _healthz_worst_wait(system, block, fixed=False)
    fixed_wait = await _healthz_worst_wait(system, block, fixed=True)
    lines = await _until_logged(system, "event_loop_blocked", "drill_blocks_the_loop")
    after = await system.metrics()
    moved = _delta(before, after, "shelfwise_event_loop_blocked_total")
    return Outcome(
        signal="shelfwise_event_loop_blocked_total",
        seen=moved >= 1 and blocked_wait > fixed_wait and (system.log_file is None or bool(lines)),
        evidence={
            "shelfwise_event_loop_blocked_total (delta)": moved,
            "event_loop_blocked log line": lines[0][:400] if lines else None,
            "worst GET /healthz wait beside the blocking route (s)": round(blocked_wait, 3),
            "worst GET /healthz wait beside the fixed route (s)": round(fixed_wait, 3),
        },
        look_at=[
            "histogram shelfwise_event_loop_lag_seconds on /metrics (every route slows at once)",
            "counter shelfwise_event_loop_blocked_total",
            system.log_hint("event_loop_blocked") + ": `blocking` names drill_blocks_the_loop",
            "GET /v1/admin/debug/profile?seconds=5 while it happens",
        ],
        fix="move blocking or CPU-bound work off the loop: `await asyncio.to_thread(...)`, "
        "an async driver, or a job on the worker",
    )


async def pool_exhaustion(system: ServedSystem, quick: bool) -> Outcome:
    before = await system.metrics()
    hold = asyncio.ensure_future(
        system.client.post(
            "/v1/admin/debug/drill/hold-connections",
            params={"seconds": 1.0 if quick else 5.0},
            headers=system.admin_headers,
        )
    )
    statuses: list[int] = []
    while not hold.done():  # each probe waits up to the server's pool timeout
        statuses.append((await system.client.get("/readyz")).status_code)
    held = (await hold).json()
    lines = await _until_logged(
        system, "db_connection_held_too_long", "hold_connection_across_slow_work"
    )
    after = await system.metrics()
    pool = {"pool": "sqlalchemy"}
    timed_out = _delta(before, after, "shelfwise_db_pool_timeouts_total", **pool)
    leaked = _delta(before, after, "shelfwise_db_connections_held_too_long_total", **pool)
    return Outcome(
        signal="shelfwise_db_pool_timeouts_total",
        seen=timed_out >= 1
        and 503 in statuses
        and leaked >= 1
        and (system.log_file is None or bool(lines)),
        evidence={
            "the drill route held": held,
            "GET /readyz statuses meanwhile": statuses,
            "shelfwise_db_pool_timeouts_total (delta)": timed_out,
            "shelfwise_db_connections_held_too_long_total (delta)": leaked,
            "db_connection_held_too_long log line": lines[0][:400] if lines else None,
        },
        look_at=[
            "gauges shelfwise_db_pool_connections{state} and shelfwise_db_pool_waiters",
            "histogram shelfwise_db_pool_wait_seconds, counter shelfwise_db_pool_timeouts_total",
            "503 problems with Retry-After while the pool is held",
            system.log_hint("db_connection_held_too_long") + ": `taken_by` names the holder",
        ],
        fix="never hold a session across a remote call: finish the transaction, call out, "
        "then open a new one (or defer the call to a job)",
    )


async def slow_query(system: ServedSystem, quick: bool) -> Outcome:
    before = await system.metrics()
    response = await system.client.post(
        "/v1/admin/debug/drill/slow-query",
        params={"rows": 200_000 if quick else 2_000_000},
        headers=system.admin_headers,
    )
    response.raise_for_status()
    report = response.json()
    lines = await _until_logged(system, "db_slow_statement", "drill_order_notes WHERE")
    after = await system.metrics()
    slow = _delta(before, after, "shelfwise_db_slow_statements_total", pool="sqlalchemy")
    seq_scan = any("Seq Scan" in line for line in report["without_index"]["plan"])
    index_scan = any("Index" in line for line in report["with_index"]["plan"])
    return Outcome(
        signal="shelfwise_db_slow_statements_total",
        # The lookup itself over the server's threshold: the table's creation is slow too.
        seen=report["without_index"]["ms"] >= report["slow_statement_ms"]
        and slow >= 1
        and seq_scan
        and index_scan
        and (system.log_file is None or bool(lines)),
        evidence={
            "lookup": report["lookup"],
            "without the index (ms, plan)": _timed_plan(report["without_index"]),
            "with the index (ms, plan)": _timed_plan(report["with_index"]),
            "shelfwise_db_slow_statements_total (delta)": slow,
            "db_slow_statement log line": lines[0][:400] if lines else None,
            "the server's slow-statement threshold (ms)": report["slow_statement_ms"],
            "if the lookup beat it": "run the drill without --quick (2M rows), or lower "
            "SHELFWISE_DB_SLOW_STATEMENT_MS for the server",
        },
        look_at=[
            system.log_hint("db_slow_statement") + ": normalized SQL, duration, request id",
            "histogram shelfwise_db_statement_duration_seconds",
            "`shelfwise db top`: the statement by total time (pg_stat_statements)",
            "EXPLAIN of the statement: a Seq Scan over the whole table",
        ],
        fix="an index on the filtered column, built with CREATE INDEX CONCURRENTLY in a "
        "migration of its own (no long lock on a live table)",
    )


async def reconnect_storm(system: ServedSystem, quick: bool) -> Outcome:
    """Reconnect a long-poll client in a tight loop until the server refuses it."""
    most = 300 if quick else 1000
    before = await system.metrics()
    statuses: list[int] = []
    retry_after = None
    while len(statuses) < most and statuses.count(429) < 5:
        answer = await system.client.get(
            "/v1/poll", params={"channels": "stock", "timeout": 0}, headers=system.admin_headers
        )
        statuses.append(answer.status_code)
        retry_after = retry_after or answer.headers.get("Retry-After")
    after = await system.metrics()
    refused = _delta(before, after, "shelfwise_rate_limited_total", policy="live_connect")
    connected = _delta(before, after, "shelfwise_live_connects_total", transport="poll")
    return Outcome(
        signal='shelfwise_rate_limited_total{policy="live_connect"}',
        seen=refused >= 1 and 429 in statuses and connected >= 1,
        evidence={
            "reconnects without backoff": len(statuses),
            "answered 2xx / 429": f"{sum(s < 300 for s in statuses)} / {statuses.count(429)}",
            "Retry-After on a 429": retry_after,
            "shelfwise_live_connects_total{transport=poll} (delta)": connected,
            'shelfwise_rate_limited_total{policy="live_connect"} (delta)': refused,
        },
        look_at=[
            "rate of shelfwise_live_connects_total and shelfwise_live_disconnects_total "
            "(the live disconnect-storm alert)",
            'shelfwise_rate_limited_total{policy="live_connect"}: 429s with Retry-After',
        ],
        fix="clients reconnect after a full-jitter exponential backoff (and honour Retry-After "
        "and the SSE `retry:` hint), resuming from their last event id",
    )


def _timed_plan(run: dict[str, object]) -> str:
    plan = run["plan"] if isinstance(run["plan"], list) else []
    return f"{run['ms']} ms: " + " / ".join(str(line).strip() for line in plan)


def _delta(
    before: dict[tuple[str, frozenset[tuple[str, str]]], float],
    after: dict[tuple[str, frozenset[tuple[str, str]]], float],
    name: str,
    **labels: str,
) -> float:
    return ServedSystem.value(after, name, **labels) - ServedSystem.value(before, name, **labels)


SERVED_DRILLS: dict[str, ServedRun] = {
    "blocked-loop": blocked_loop,
    "slow-query": slow_query,
    "pool-exhaustion": pool_exhaustion,
    "reconnect-storm": reconnect_storm,
}


async def run_served(
    name: str, url: str, credentials: tuple[str, str], *, log_file: Path | None, quick: bool
) -> Outcome:
    """Run the HTTP form of drill `name` against the server at `url` as that admin."""
    email, password = credentials
    async with open_served(url, email=email, password=password, log_file=log_file) as system:
        return await SERVED_DRILLS[name](system, quick)
