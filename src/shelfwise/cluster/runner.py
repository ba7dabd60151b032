"""`shelfwise cluster`: start the topology, print where it is, supervise until Ctrl-C.

Order: PostgreSQL (embedded under `<run dir>/pg` unless DATABASE_URL), migrations and demo
data as one-shot commands on the direct DSN, then tier by tier Redis and pgbouncer, the
API and live instances and workers, and nginx. A child that dies is restarted with backoff. Ctrl-C
or SIGTERM stops nginx (graceful), then every instance (they drain) and worker (running
jobs get their grace period), then pgbouncer and Redis; the embedded PostgreSQL stops when
this process exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from shelfwise.cluster.binaries import require
from shelfwise.cluster.supervisor import Supervisor
from shelfwise.cluster.topology import Topology, TopologyOptions, build_topology, required_binaries
from shelfwise.embedded import start_embedded


@dataclass(frozen=True)
class ClusterRequest:
    run_dir: Path
    database_url: str | None  # None: the embedded PostgreSQL under run_dir/pg
    apis: int = 3
    workers: int = 2
    lives: int = 1  # `serve --role live` instances behind nginx's live locations
    http_port: int = 8080
    https_port: int = 8443
    products: int = 200


def _one_shot(url: str, *args: str) -> None:
    """`shelfwise <args>` against `url`, like the migrate job before a rollout."""
    subprocess.run(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "shelfwise.cli", *args],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
    )


def _print_welcome(console: Console, topology: Topology, run_dir: Path) -> None:
    from shelfwise.seed import DEMO_LOGINS

    ports = topology.ports
    console.rule("[bold]Shelfwise cluster is running")
    console.print(f"  Load balancer:  {topology.http_url}/docs   and   {topology.https_url}/")
    console.print(f"                  (nginx; self-signed certificate in {run_dir / 'tls'})")
    for name, port in zip(topology.api_names, ports.api, strict=True):
        console.print(f"  {name}:          http://127.0.0.1:{port}/metrics")
    for name, port in zip(topology.live_names, ports.live, strict=True):
        console.print(f"  {name}:         http://127.0.0.1:{port}/metrics  (live streams)")
    for name, port in zip(topology.worker_names, ports.worker_metrics, strict=True):
        console.print(f"  {name}:       http://127.0.0.1:{port}/metrics")
    console.print(f"  pgbouncer:      {topology.app_url}  (transaction pooling)")
    console.print(f"  Redis:          {topology.redis_url}")
    console.print("  Demo logins (development only):")
    for login in DEMO_LOGINS:
        console.print(f"    {login.role.value:<9} {login.email}  /  {login.password}")
    console.print("  Ctrl-C stops every process (instances drain first).")
    console.rule()


async def _supervise(console: Console, topology: Topology, logs: Path) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness probe
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    supervisor = Supervisor(topology.specs)
    try:
        starting = asyncio.create_task(supervisor.start_all())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # Ctrl-C during start-up
            starting.cancel()
            return 0
        stopping.cancel()
        if (error := starting.exception()) is not None:
            console.print(f"[red]cluster did not start: {error}[/] (logs in {logs})")
            return 1
        _print_welcome(console, topology, logs.parent)
        sys.stderr.flush()
        await supervisor.watch(stop)
        console.print("[bold]stopping the cluster…[/]")
        return 0
    finally:
        await supervisor.stop_all()
        console.print("cluster stopped")


def run_cluster(request: ClusterRequest, console: Console) -> int:
    options = TopologyOptions(
        run_dir=request.run_dir.resolve(),
        database_url="",
        apis=request.apis,
        workers=request.workers,
        lives=request.lives,
        http_port=request.http_port,
        https_port=request.https_port,
        workdir=Path.cwd(),
    )
    binaries = require(*required_binaries(options))  # before anything starts
    url = request.database_url or start_embedded(options.run_dir)
    console.print("migrating and seeding (direct connection)…")
    _one_shot(url, "migrate")
    _one_shot(url, "seed", "--products", str(request.products))
    options = replace(options, database_url=url)
    topology = build_topology(options, binaries)
    return asyncio.run(_supervise(console, topology, options.run_dir / "logs"))
