"""Real `shelfwise worker` processes: kill -9 mid-job, and SIGTERM with a job running.

Short heartbeat and stall thresholds (settings) keep each test well under 30 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
LOCK_KEY = 424242

pytestmark = pytest.mark.e2e


class Workers:
    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, **settings: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": self.database_url,
            "SHELFWISE_ENV": "test",
            "SHELFWISE_LOG_JSON": "true",
            "SHELFWISE_DATA_DIR": str(self.tmp_path),
            "SHELFWISE_DB_POOL_SIZE": "2",
            "SHELFWISE_DB_MAX_OVERFLOW": "2",
            "SHELFWISE_JOBS_EXTRA_MODULES": json.dumps(["tests.e2e.worker_tasks"]),
            "SHELFWISE_WORKER_POLL_SECONDS": "0.3",
            "SHELFWISE_WORKER_HEARTBEAT_SECONDS": "0.5",
            "SHELFWISE_WORKER_STALLED_AFTER_SECONDS": "2",
            "SHELFWISE_JOBS_STALLED_CHECK_CRON": "* * * * * *",  # every second
            **{f"SHELFWISE_{key.upper()}": value for key, value in settings.items()},
        }
        with (self.tmp_path / f"worker-{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(SHELFWISE), "worker", "--name", name],
                cwd=self.tmp_path,  # no stray .env is picked up
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"worker-{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            if process.returncode not in (0, -signal.SIGKILL):
                print(self.log(name))


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(database_url, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def defer_blocking_job(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW('test', 'test_block_on_lock',"
            " 0, NULL, NULL, %s::jsonb, NULL)::procrastinate_job_to_defer_v1]))",
            (json.dumps({"key": LOCK_KEY}),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def job_state(database_url: str, job_id: int) -> tuple[str, str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT j.status::text, coalesce(p.message, ''), j.attempts FROM procrastinate_jobs j"
            " LEFT JOIN job_progress p ON p.job_id = j.id WHERE j.id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def state_is(
    database_url: str, job_id: int, status: str, message: str
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        current = job_state(database_url, job_id)
        return current[0] == status and current[1] == message

    return check


async def test_job_of_a_killed_worker_is_finished_by_another(
    database_url: str, workers: Workers
) -> None:
    with psycopg.connect(database_url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))  # the job will wait on this
        job_id = defer_blocking_job(database_url)
        first = workers.start("alpha")
        await wait_until(
            state_is(database_url, job_id, "doing", "started by alpha"),
            timeout=20,
            what="alpha to start the job",
        )
        workers.start("beta")
        first.send_signal(signal.SIGKILL)  # no goodbye: no unregister, no graceful stop
        first.wait(timeout=10)
        # alpha's heartbeat goes stale; recover_stalled_jobs hands the job back; beta runs it.
        try:
            await wait_until(
                state_is(database_url, job_id, "doing", "started by beta"),
                timeout=20,
                what="beta to pick up the stalled job",
            )
        except AssertionError:
            print(job_state(database_url, job_id), workers.log("beta"), sep="\n")
            raise
        gate.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    await wait_until(
        state_is(database_url, job_id, "succeeded", "finished by beta"),
        timeout=10,
        what="beta to finish the job",
    )
    assert '"stalled_job_requeued"' in workers.log("beta") or '"stalled_job_requeued"' in (
        workers.log("alpha")
    )


async def test_sigterm_gives_a_running_job_back_and_exits_cleanly(
    database_url: str, workers: Workers
) -> None:
    with psycopg.connect(database_url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        job_id = defer_blocking_job(database_url)
        worker = workers.start("gamma", worker_shutdown_timeout_seconds="1")
        await wait_until(
            state_is(database_url, job_id, "doing", "started by gamma"),
            timeout=20,
            what="gamma to start the job",
        )
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        status, _, attempts = job_state(database_url, job_id)
    # Not finished within the graceful timeout: aborted and re-queued for another worker.
    assert status == "todo"
    assert attempts == 1
    assert '"worker_stopped"' in workers.log("gamma")
