"""PostgreSQL stops (`pg_ctl stop -m immediate`) and starts again under light load.

Issue 10, test 5, with real processes: `shelfwise serve` and `shelfwise worker` against
a PostgreSQL server of the test's own (`tests/pg_support.py`), which it kills.

- While it is down the API answers 503 problem+json with `Retry-After` at once (the
  circuit breaker, `availability.py`), never a 500, never after a pool wait; `/readyz`
  fails and `/healthz` does not.
- Afterwards everything recovers without restarting any Shelfwise process: writes
  succeed again, the worker is still the same process (it restarted Procrastinate
  itself) and runs a new job, the relay resumes and stamps every committed event.
- No committed event is lost or duplicated: positions are contiguous, and a long-poll
  client that kept polling through the outage received every stock event exactly once,
  in order; every write the client saw succeed has its event.

Twice: with directly started processes, and through the production shape (nginx, two
instances, pgbouncer in transaction mode, Redis, a worker; `tests/cluster_support.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.cluster_support import running_cluster
from tests.pg_support import DisposablePostgres, disposable_postgres
from tests.redis_support import free_port
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
FAST = 1.0  # seconds: "at once" for an answer while the database is known down
BREAKER_SETTLE = 1.0  # after the kill, before every answer must already be fast
# Through pgbouncer a query queued when PostgreSQL went away waits its query_wait_timeout
# (3 s, cluster/pgbouncer.py); after pgbouncer's first failed server login, and once the
# breaker's probe (PROBE_TIMEOUT_SECONDS, 2 s) gave its verdict, answers are immediate.
PGBOUNCER_SETTLE = 5.0
# What no answer may ever take, even one caught by the kill: far below the app's 30 s
# request deadline (directly: a connect refused at once; through pgbouncer: its 3 s queue
# wait, plus a busy machine's margin).
WORST_DIRECT = BREAKER_SETTLE + 4.0
WORST_PGBOUNCER = 8.0

pytestmark = pytest.mark.e2e


@dataclass
class Outcome:
    started: float
    elapsed: float
    status: int  # 0: no HTTP answer (connection error, client timeout)
    content_type: str = ""
    retry_after: str | None = None
    what: str = ""


@dataclass
class Load:
    """Stock adjustments and stock reads, one at a time each: light, steady load."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    product_id: str
    location_id: str
    outcomes: list[Outcome] = field(default_factory=list)

    async def _one(self, method: str, url: str, **kwargs: object) -> None:
        started = time.monotonic()
        try:
            response = await self.client.request(method, url, headers=self.headers, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError:
            self.outcomes.append(Outcome(started, time.monotonic() - started, 0, what=url))
            return
        self.outcomes.append(
            Outcome(
                started,
                time.monotonic() - started,
                response.status_code,
                response.headers.get("content-type", ""),
                response.headers.get("retry-after"),
                url,
            )
        )

    async def adjust(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._one(
                "POST",
                "/v1/stock/adjustments",
                json={
                    "product_id": self.product_id,
                    "location_id": self.location_id,
                    "kind": "receipt",
                    "quantity": 1,
                    "reason": "restart test",
                },
            )
            await asyncio.sleep(0.02)  # pacing of the load, not waiting for a condition

    async def read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._one("GET", "/v1/stock", params={"limit": 5})
            await asyncio.sleep(0.02)

    def count(self, status: int, after: float = 0.0) -> int:
        return sum(1 for o in self.outcomes if o.status == status and o.started >= after)


@dataclass
class Follower:
    """A long-poll client that keeps polling through the outage, as a real one would."""

    client: httpx.AsyncClient
    headers: dict[str, str]
    start: int = -1
    received: list[int] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # answers other than 200/204/503

    async def run(self, stop: asyncio.Event) -> None:
        first = await self.client.get(
            "/v1/poll", params={"channels": "stock"}, headers=self.headers
        )
        assert first.status_code == 200, first.text
        self.start = position = int(first.json()["position"])
        while not stop.is_set():
            try:
                response = await self.client.get(
                    "/v1/poll",
                    params={"channels": "stock", "since": position, "timeout": 1},
                    headers=self.headers,
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.1)  # pacing the retry, as a real client would
                continue
            if response.status_code == 200:
                body = response.json()
                self.received.extend(int(event["position"]) for event in body["events"])
                position = int(body["position"])
            elif response.status_code != 204:
                if response.status_code != 503:
                    self.unexpected.append(f"{response.status_code} {response.text[:300]}")
                    return
                await asyncio.sleep(0.1)


def cli(env: dict[str, str], workdir: Path, *args: str) -> None:
    done = subprocess.run(
        [str(SHELFWISE), *args], cwd=workdir, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, f"shelfwise {' '.join(args)}: {done.stderr.decode()[-3000:]}"


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [str(SHELFWISE), *args],
                cwd=self.workdir,  # no stray .env is picked up
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started[name] = process
        return process

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: other sessions on this box may clean it while we run.
    path = Path(tempfile.mkdtemp(prefix="shelfwise-db-restart-"))
    path.chmod(0o755)  # pgbouncer, started as root, reads its files as `nobody`
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes(workdir: Path) -> Iterator[Processes]:
    running = Processes(workdir)
    try:
        yield running
    finally:
        running.kill_all()
        for name in running.started:
            print(f"--- {name}.log\n{running.log(name)[-6000:]}")


def environment(database_url: str, workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": database_url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_LOG_JSON": "true",
        "SHELFWISE_DATA_DIR": str(workdir),
        "SHELFWISE_DB_POOL_SIZE": "3",
        "SHELFWISE_DB_MAX_OVERFLOW": "2",
        "SHELFWISE_JOBS_EXTRA_MODULES": json.dumps(["tests.e2e.worker_tasks"]),
        "SHELFWISE_WORKER_POLL_SECONDS": "0.3",
        "SHELFWISE_WORKER_HEARTBEAT_SECONDS": "0.5",
        "SHELFWISE_WORKER_STALLED_AFTER_SECONDS": "2",
        "SHELFWISE_JOBS_STALLED_CHECK_CRON": "* * * * * *",
        "SHELFWISE_LIVE_FEED_POLL_SECONDS": "0.2",
    }


def one_row(url: str, sql: str) -> tuple[object, ...]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql.encode()).fetchone()  # fixed SQL from this test
    assert row is not None
    return tuple(row)


def defer_quick_job(url: str) -> int:
    # The worker-process tests' task; nobody holds the lock, so it finishes at once.
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW('test', 'test_block_on_lock',"
            " 0, NULL, NULL, %s::jsonb, NULL)::procrastinate_job_to_defer_v1]))",
            (json.dumps({"key": 777001}),),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def outage_under_load(
    client: httpx.AsyncClient,
    pg: DisposablePostgres,
    url: str,
    *,
    api_alive: Callable[[], bool],
    worker_alive: Callable[[], bool],
    worker_log: Callable[[], str],
    settle: float,
    slowest_allowed: float,
    worst_allowed: float,
) -> None:
    """The scenario, the same directly and through nginx + pgbouncer: load, kill, check
    the answers while down, start, check recovery, jobs, the relay and a live client.
    `settle`: seconds after the kill after which every answer must take < `slowest_allowed`;
    `worst_allowed`: what no answer may take at all, even one caught by the kill itself."""

    async def ready() -> bool:
        assert api_alive(), "the API process exited"
        try:
            return (await client.get("/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    await wait_until(ready, timeout=30, interval=0.1, what="/readyz")
    login = await client.post(
        "/v1/auth/login",
        json={"email": "staff@shelfwise.local", "password": "staff-demo-password"},
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    product_id, location_id = (
        str(value)
        for value in one_row(
            url,
            "SELECT p.id, l.id FROM products p, locations l ORDER BY p.sku, l.code LIMIT 1",
        )
    )
    load = Load(client, headers, product_id, location_id)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(load.adjust(stop)),
        asyncio.create_task(load.read(stop)),
    ]
    follower = Follower(client, headers)
    following = asyncio.create_task(follower.run(stop_following := asyncio.Event()))

    async def written(count: int, after: float = 0.0) -> bool:
        return load.count(201, after) >= count

    await wait_until(lambda: written(10), timeout=20, what="writes before the outage")

    # -- the outage ---------------------------------------------------------------
    pg.stop_immediately()
    down_at = time.monotonic()

    async def worker_waiting() -> bool:
        # Procrastinate stopped on its lost connections; the worker process did
        # not exit but waits for the database to restart it.
        return "job_worker_waiting_for_database" in worker_log()

    await wait_until(worker_waiting, timeout=settle + 20, what="the worker to wait it out")

    async def fast_503s() -> bool:
        return load.count(503, down_at + settle) >= 10

    await wait_until(fast_503s, timeout=settle + 20, what="503s once the breaker is open")
    health = await client.get("/healthz")
    readiness_started = time.monotonic()
    readiness = await client.get("/readyz")
    readiness_took = time.monotonic() - readiness_started
    pg.start()
    up_at = time.monotonic()

    # -- recovery, with no Shelfwise process restarted ----------------------------
    await wait_until(ready, timeout=20, interval=0.1, what="/readyz after the restart")
    await wait_until(lambda: written(10, up_at), timeout=20, what="writes after the restart")
    recovered_after = (
        min(o.started + o.elapsed for o in load.outcomes if o.status == 201 and o.started >= up_at)
        - up_at
    )
    stop.set()
    await asyncio.gather(*tasks)

    assert health.status_code == 200
    assert readiness.status_code == 503
    assert readiness.json()["checks"]["database"].startswith("unreachable")
    assert readiness_took < FAST

    failures = [o for o in load.outcomes if o.status not in (200, 201, 503)]
    assert failures == [], f"no 500s, no dropped connections: {failures[:5]}"
    while_down = [
        o for o in load.outcomes if o.started >= down_at + settle and o.started + o.elapsed < up_at
    ]
    assert while_down, "the load ran through the outage"
    assert all(o.status == 503 for o in while_down)
    assert all(o.content_type.startswith("application/problem+json") for o in while_down)
    assert all(o.retry_after is not None for o in while_down)
    slowest = max(o.elapsed for o in while_down)
    assert slowest < slowest_allowed, f"503s while down took up to {slowest:.2f}s"

    # Even the requests caught by the kill itself never waited out a pool timeout.
    def described(outcomes: list[Outcome]) -> list[tuple[str, int, float, float]]:
        return [
            (o.what, o.status, round(o.elapsed, 2), round(o.started - down_at, 2)) for o in outcomes
        ]

    slow = [o for o in load.outcomes if o.elapsed >= worst_allowed]
    assert slow == [], described(slow)
    print(
        f"outage {up_at - down_at:.1f}s: {len(while_down)} answers while down, "
        f"slowest {slowest * 1000:.0f} ms; first write {recovered_after:.2f}s after start; "
        f"slowest overall: {described(sorted(load.outcomes, key=lambda o: -o.elapsed)[:4])}"
    )

    # The worker rode it out: same process, and it runs jobs again.
    assert worker_alive(), "the worker exited"

    async def worker_restarted() -> bool:
        return "job_worker_restarting" in worker_log()

    await wait_until(worker_restarted, timeout=20, what="the worker to restart its jobs")
    job_id = defer_quick_job(url)

    async def job_done() -> bool:
        status = one_row(url, f"SELECT status::text FROM procrastinate_jobs WHERE id = {job_id}")
        return status[0] == "succeeded"

    await wait_until(job_done, timeout=20, what="a job run after the outage")

    # The relay resumed: every committed event stamped, once, without gaps.
    async def all_stamped() -> bool:
        row = one_row(url, "SELECT count(*) FROM outbox_events WHERE position IS NULL")
        return row[0] == 0

    await wait_until(all_stamped, timeout=20, what="the relay to stamp every event")
    count, top, distinct = one_row(
        url, "SELECT count(*), max(position), count(DISTINCT position) FROM outbox_events"
    )
    assert count == top == distinct

    # And a live client that polled through it got every stock event exactly once.
    with psycopg.connect(url, autocommit=True) as conn:
        expected = [
            int(row[0])
            for row in conn.execute(
                "SELECT position FROM outbox_events WHERE position > %s"
                " AND type IN ('stock.changed', 'stock.low') ORDER BY position",
                (follower.start,),
            )
        ]

    async def follower_caught_up() -> bool:
        assert follower.unexpected == [], follower.unexpected
        return len(follower.received) >= len(expected)

    await wait_until(follower_caught_up, timeout=20, what="the long-poll client")
    stop_following.set()
    await following
    assert follower.received == expected
    # Every adjustment the client saw succeed committed its event (seeding adds none).
    changes = one_row(url, "SELECT count(*) FROM outbox_events WHERE type = 'stock.changed'")
    assert changes[0] >= load.count(201)
    assert api_alive(), "the API process exited"


async def test_database_restart_is_a_fast_503_and_everything_recovers(
    workdir: Path, processes: Processes
) -> None:
    with disposable_postgres() as pg:
        url = pg.create_database("shelfwise")
        env = environment(url, workdir)
        cli(env, workdir, "migrate")
        cli(env, workdir, "seed", "--products", "3")
        port = free_port()
        api = processes.start("api", env, "serve", "--host", "127.0.0.1", "--port", str(port))
        worker = processes.start("worker", env, "worker", "--name", "survivor")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            await outage_under_load(
                client,
                pg,
                url,
                api_alive=lambda: api.poll() is None,
                worker_alive=lambda: worker.poll() is None,
                worker_log=lambda: processes.log("worker"),
                settle=BREAKER_SETTLE,
                slowest_allowed=FAST,
                worst_allowed=WORST_DIRECT,
            )


async def test_database_restart_through_nginx_and_pgbouncer(workdir: Path) -> None:
    """The same through the production shape: nginx in front of two instances, pgbouncer
    (transaction pooling) in front of the private PostgreSQL, Redis, one worker. A query
    that pgbouncer queued just as PostgreSQL went away waits its `query_wait_timeout`
    (3 s); every other answer is immediate: pgbouncer itself refuses new work after its
    first failed server login, and the breaker opens on the probe's verdict (≤ 2 s)."""
    async with asyncio.timeout(150):  # cluster start on a busy box ~30 s, scenario ~30 s
        await restart_through_the_cluster(workdir)


async def restart_through_the_cluster(workdir: Path) -> None:
    with disposable_postgres() as pg:
        url = pg.create_database("shelfwise")
        env = environment(url, workdir)
        cli(env, workdir, "migrate")
        cli(env, workdir, "seed", "--products", "3")
        settings = {
            k: v
            for k, v in env.items()
            if k.startswith("SHELFWISE_")
            and k
            not in ("SHELFWISE_DATA_DIR", "SHELFWISE_DB_POOL_SIZE", "SHELFWISE_DB_MAX_OVERFLOW")
        }
        async with (
            running_cluster(
                url,
                workdir,
                apis=2,
                workers=1,
                app_env=settings,
                worker_env={**settings, "PYTHONPATH": str(ROOT)},  # the test task module
            ) as cluster,
            cluster.client(timeout=20) as client,
        ):
            await outage_under_load(
                client,
                pg,
                cluster.direct_url,
                api_alive=lambda: all(cluster.child(name).alive for name in cluster.apis),
                worker_alive=lambda: cluster.child("worker-1").alive,
                worker_log=lambda: cluster.log("worker-1"),
                settle=PGBOUNCER_SETTLE,
                slowest_allowed=FAST,
                worst_allowed=WORST_PGBOUNCER,
            )
