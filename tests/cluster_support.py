"""A whole Shelfwise cluster for a test: pgbouncer, redis-server, N `shelfwise serve`,
M `shelfwise worker` and nginx, on free ports under the test's tmp directory.

    async with running_cluster(database_url, tmp_path, apis=3, workers=1) as cluster:
        async with cluster.client() as client:        # through nginx (http)
            await client.get("/v1/products")
        await cluster.restart("api-2")                 # SIGTERM (drain), start, wait ready
        await cluster.kill("api-3")                    # kill -9
        await cluster.start("api-3")
        await cluster.stop("redis"); await cluster.start("redis")

PostgreSQL is the suite's server: pass the `database_url` fixture (a fresh database copied
from the migrated template). A test that must restart PostgreSQL itself passes the URL of a
server it owns. Children are the same specs `shelfwise cluster` runs
(`shelfwise.cluster.topology`); unlike the runner, nothing is restarted behind the test's
back unless `supervised=True`. Every child is stopped on exit (SIGTERM, then SIGKILL), also
when the test fails, and dies with the test process if that is killed (PR_SET_PDEATHSIG,
and the supervisor's keeper for nginx's workers and a pgbouncer that switched user).
On failure the tail of every child's log is printed.

Missing nginx/pgbouncer/redis-server/openssl: skipped locally, a failure in CI
(`tests.support.require_binary`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from shelfwise.cluster.nginx import EdgeLimits
from shelfwise.cluster.pgbouncer import PoolSizes
from shelfwise.cluster.supervisor import Child, Supervisor
from shelfwise.cluster.topology import Topology, TopologyOptions, build_topology, required_binaries
from tests.support import require_binary

READY_TIMEOUT = 90.0  # five Python processes starting at once on a busy 2-core box (load 7 seen)

# Settings every test cluster gets (a test's own `app_env` wins).
TEST_APP_ENV = {
    "SHELFWISE_ENV": "test",
    "SHELFWISE_DB_POOL_SIZE": "3",
    "SHELFWISE_DB_MAX_OVERFLOW": "3",
    "SHELFWISE_ACCESS_LOG": "false",
}


class Cluster:
    """The running cluster: its URLs, and one-instance controls for fault tests."""

    def __init__(self, topology: Topology, supervisor: Supervisor) -> None:
        self.topology = topology
        self.supervisor = supervisor

    # Addresses -------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """nginx, plain HTTP (127.0.0.1 only)."""
        return self.topology.http_url

    @property
    def https_url(self) -> str:
        """nginx, TLS with the self-signed certificate (pass verify=False)."""
        return self.topology.https_url

    @property
    def direct_url(self) -> str:
        """PostgreSQL itself (for assertions and fixtures)."""
        return self.topology.direct_url

    @property
    def pooled_url(self) -> str:
        """What the instances use as DATABASE_URL (pgbouncer when on)."""
        return self.topology.app_url

    @property
    def redis_url(self) -> str | None:
        return self.topology.redis_url

    @property
    def apis(self) -> list[str]:
        return self.topology.api_names

    @property
    def workers(self) -> list[str]:
        return self.topology.worker_names

    @property
    def lives(self) -> list[str]:
        """The live instances (`serve --role live`); empty: the API instances serve streams."""
        return self.topology.live_names

    def api_url(self, name: str) -> str:
        """One instance directly, bypassing nginx."""
        return self.topology.api_url(name)

    def client(self, *, https: bool = False, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client through nginx."""
        kwargs.setdefault("timeout", 10.0)
        if https:
            kwargs.setdefault("verify", False)  # the cluster's self-signed certificate
        return httpx.AsyncClient(base_url=self.https_url if https else self.http_url, **kwargs)

    # Controls --------------------------------------------------------------------------
    def child(self, name: str) -> Child:
        return self.supervisor[name]

    async def stop(self, name: str, *, grace: float | None = None) -> int | None:
        """Graceful stop (SIGTERM; nginx SIGQUIT); its exit code. Stays down."""
        return await self.child(name).stop(grace=grace)

    async def kill(self, name: str) -> int | None:
        """kill -9. Stays down."""
        return await self.child(name).kill()

    async def start(self, name: str, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """Start a stopped child again and wait until it serves."""
        child = self.child(name)
        child.start()
        await child.wait_ready(ready_timeout)

    async def restart(self, name: str) -> int | None:
        """Stop gracefully, start again, wait until ready; the exit code of the stop."""
        code = await self.stop(name)
        await self.start(name)
        return code

    def signal(self, name: str, signum: int) -> None:
        self.child(name).send(signum)

    def log(self, name: str) -> str:
        path = self.child(name).spec.log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def print_logs(self, tail: int = 3000) -> None:
        for name in self.supervisor.children:
            print(f"--- {name}\n{self.log(name)[-tail:]}")


# What a child logs when its port was taken between allocation and bind (nginx, uvicorn,
# Redis, pgbouncer, Prometheus's exporter each say it in these words).
PORT_TAKEN = ("Address already in use", "address already in use")


async def started(
    options: TopologyOptions, binaries: dict[str, str], ready_timeout: float
) -> Cluster:
    """A cluster with every child serving. Its ports are free when allocated, but another
    test process may bind one before the child does: then it is started once more, on
    new ports. Any other failure is raised at once, with the children's logs."""
    for attempt in (1, 2):
        topology = build_topology(options, binaries)
        cluster = Cluster(topology, Supervisor(topology.specs, max_backoff=2.0))
        try:
            await cluster.supervisor.start_all(ready_timeout=ready_timeout)
            return cluster
        except BaseException:
            await cluster.supervisor.stop_all()
            logs = [cluster.log(name) for name in cluster.supervisor.children]
            if attempt == 1 and any(taken in log for log in logs for taken in PORT_TAKEN):
                print("a port was taken before its child bound it: starting again")
                continue
            cluster.print_logs()
            raise
    raise AssertionError("unreachable")


@asynccontextmanager
async def running_cluster(
    database_url: str,
    tmp_path: Path,
    *,
    apis: int = 3,
    workers: int = 0,
    lives: int = 0,
    redis: bool = True,
    pgbouncer: bool = True,
    app_env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    limits: EdgeLimits | None = None,
    pool: PoolSizes | None = None,
    supervised: bool = False,
    ready_timeout: float = READY_TIMEOUT,
) -> AsyncIterator[Cluster]:
    """Start the cluster, wait until every child serves, yield it, stop everything."""
    options = TopologyOptions(
        run_dir=tmp_path / "cluster",
        database_url=database_url,
        apis=apis,
        workers=workers,
        lives=lives,
        redis=redis,
        pgbouncer=pgbouncer,
        app_env={**TEST_APP_ENV, **(app_env or {})},
        worker_env=dict(worker_env or {}),
        # Load tests come from one address: the edge limits are not what they measure.
        limits=limits or EdgeLimits(rate="10000r/s", burst=10000, connections=20000),
        pool=pool or PoolSizes(pool=10, clients=500),
    )
    binaries = {name: require_binary(name) for name in required_binaries(options)}
    cluster = await started(options, binaries, ready_timeout)
    supervisor = cluster.supervisor
    stop_watching = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    failed = True
    try:
        if supervised:
            watcher = asyncio.create_task(supervisor.watch(stop_watching))
        yield cluster
        failed = False
    finally:
        stop_watching.set()
        if watcher is not None:
            with contextlib.suppress(Exception):
                await watcher
        await supervisor.stop_all()
        if failed:
            cluster.print_logs()
