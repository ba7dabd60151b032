"""Two workers behind pgbouncer (Procrastinate's listener and the relay on the direct DSN):
cron fires once per period however many workers run; a job whose worker is killed -9 is
finished by the other; SIGTERM lets a running job finish before the worker exits.

Short heartbeat and stall settings keep it to seconds; the jobs block on an advisory lock
the test holds (tests/e2e/worker_tasks.py), so nothing here waits on a sleep.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psycopg
import pytest

from tests.cluster_support import running_cluster
from tests.e2e.test_worker_processes import LOCK_KEY, ROOT, defer_blocking_job, job_state, state_is
from tests.support import wait_until

pytestmark = pytest.mark.e2e

WORKER_ENV = {
    "PYTHONPATH": str(ROOT),
    "SHELFWISE_JOBS_EXTRA_MODULES": json.dumps(["tests.e2e.worker_tasks"]),
    "SHELFWISE_WORKER_POLL_SECONDS": "0.3",
    "SHELFWISE_WORKER_HEARTBEAT_SECONDS": "0.5",
    "SHELFWISE_WORKER_STALLED_AFTER_SECONDS": "2",
    "SHELFWISE_JOBS_STALLED_CHECK_CRON": "* * * * * *",  # every second, on both workers
}


def periodic_runs(database_url: str) -> list[tuple[str, int]]:
    """(period, jobs deferred for it) of the every-second cron task."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT args->>'timestamp', count(*) FROM procrastinate_jobs"
            " WHERE task_name = 'recover_stalled_jobs' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    return [(str(period), int(count)) for period, count in rows]


async def test_two_workers_share_cron_recover_a_killed_worker_and_drain(
    database_url: str, tmp_path: Path
) -> None:
    async with running_cluster(
        database_url, tmp_path, apis=0, workers=2, redis=False, worker_env=WORKER_ENV
    ) as cluster:
        url = cluster.direct_url

        # Cron: both workers schedule every second, yet each second has one job.
        async def several_periods() -> bool:
            return len(periodic_runs(url)) >= 4

        await wait_until(several_periods, timeout=20, what="four cron periods")
        runs = periodic_runs(url)
        assert {count for _, count in runs} == {1}, runs

        with psycopg.connect(url, autocommit=True) as gate:
            # kill -9 mid-job: the other worker finishes it.
            gate.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            job_id = defer_blocking_job(url)

            async def started() -> bool:
                return job_state(url, job_id)[1].startswith("started by")

            await wait_until(started, timeout=20, what="a worker to start the job")
            first = job_state(url, job_id)[1].removeprefix("started by ")
            other = next(name for name in cluster.workers if name != first)
            assert await cluster.kill(first) == -signal.SIGKILL
            await wait_until(
                state_is(url, job_id, "doing", f"started by {other}"),
                timeout=20,
                what=f"{other} to take over the stalled job",
            )
            gate.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            await wait_until(
                state_is(url, job_id, "succeeded", f"finished by {other}"),
                timeout=10,
                what=f"{other} to finish the job",
            )

            # SIGTERM with a job running: the worker stops fetching, lets it finish, exits 0.
            gate.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            drained = defer_blocking_job(url)
            await wait_until(
                state_is(url, drained, "doing", f"started by {other}"),
                timeout=20,
                what=f"{other} to start the second job",
            )
            cluster.signal(other, signal.SIGTERM)

            async def stopping() -> bool:
                return '"worker_stopping"' in cluster.log(other)

            await wait_until(stopping, timeout=10, what=f"{other} to begin its graceful stop")
            gate.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            assert await cluster.child(other).wait_exit(30) == 0, cluster.log(other)[-3000:]
        assert job_state(url, drained)[:2] == ("succeeded", f"finished by {other}")
        assert '"worker_stopped"' in cluster.log(other)
