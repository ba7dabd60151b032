"""`shelfwise` command line: serve, worker, migrate, seed, create-user, reconcile, run."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, TypeVar

import structlog
import typer
import uvicorn
from rich.console import Console

from shelfwise.config import ServerRole, Settings, load_settings
from shelfwise.db import Database, open_database
from shelfwise.drills.command import drill
from shelfwise.embedded import start_embedded
from shelfwise.identity.models import Role
from shelfwise.identity.passwords import PasswordHasher
from shelfwise.observability.dbtop import db_app
from shelfwise.observability.logging import configure_logging

log = structlog.get_logger("shelfwise.cli")

app = typer.Typer(
    help="Shelfwise: real-time inventory and orders.",
    no_args_is_help=True,
    # Tracebacks with local variables would print connection URLs and passwords.
    pretty_exceptions_show_locals=False,
)
console = Console(stderr=True)
T = TypeVar("T")


def _database_url(settings: Settings, *, keep_running: bool = False) -> str:
    if settings.database_url:
        return settings.database_url
    url = start_embedded(Path(settings.data_dir), keep_running=keep_running)
    # Child processes and the app's lifespan reuse this server instead of starting another.
    os.environ["DATABASE_URL"] = url
    return url


def _with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    async def main() -> T:
        db = open_database(settings, _database_url(settings))
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _hasher(settings: Settings) -> PasswordHasher:
    return PasswordHasher(
        memory_kib=settings.argon2_memory_kib,
        time_cost=settings.argon2_time_cost,
        parallelism=settings.argon2_parallelism,
    )


@app.command()
def migrate(
    revision: Annotated[
        str, typer.Argument(help="Alembic revision to upgrade to (e.g. 0009_broker)")
    ] = "head",
) -> None:
    """Apply database migrations (to the latest by default): `shelfwise migrate [REV]`."""
    from shelfwise.migrate import upgrade

    settings = load_settings()
    configure_logging(settings)
    upgrade(_database_url(settings), revision)
    console.print(f"[green]database at {revision}[/]")


@app.command()
def seed(products: Annotated[int, typer.Option(min=0, help="Products to have")] = 200) -> None:
    """Seed demo users, 3 locations and products with stock. Safe to run twice."""
    from shelfwise import seed as seeding

    settings = load_settings()
    configure_logging(settings)
    if settings.is_production:
        raise typer.BadParameter("refusing to seed demo data in production")

    async def work(db: Database) -> tuple[int, int]:
        hasher = _hasher(settings)
        try:
            async with db.sessions() as session:
                users = await seeding.seed_users(session, hasher)
                added = await seeding.seed_catalog(session, products=products)
            return users, added
        finally:
            hasher.close()

    users, added = _with_db(settings, work)
    console.print(f"seeded {users} users, {added} products")


@app.command("create-user")
def create_user(
    email: str,
    role: Annotated[Role, typer.Option(help="admin, staff or customer")] = Role.CUSTOMER,
    full_name: str = "",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
) -> None:
    """Create a user (prompts for the password)."""
    from shelfwise.errors import ShelfwiseError
    from shelfwise.identity import service

    settings = load_settings()
    configure_logging(settings)

    async def work(db: Database) -> str:
        hasher = _hasher(settings)
        try:
            async with db.sessions() as session:
                user = await service.create_user(
                    session, hasher, email=email, password=password, full_name=full_name, role=role
                )
            return str(user.id)
        finally:
            hasher.close()

    try:
        user_id = _with_db(settings, work)
    except ShelfwiseError as exc:
        console.print(f"[red]{exc.detail}[/]")
        raise typer.Exit(1) from exc
    console.print(f"created {role.value} {email} ({user_id})")


@app.command()
def reconcile() -> None:
    """Check every stock level against its ledger and open reservations; exit 1 on drift."""
    from shelfwise.reconciliation import ReconciliationReport, reconcile_all

    settings = load_settings()
    configure_logging(settings)

    async def work(db: Database) -> ReconciliationReport:
        async with db.sessions() as session:
            return await reconcile_all(session)

    report = _with_db(settings, work)
    for ledger_row in report.ledger:
        console.print(f"[red]ledger drift[/] {ledger_row}")
    for held_row in report.reservations:
        console.print(f"[red]reservation drift[/] {held_row}")
    console.print(
        f"{len(report.ledger)} levels drift from the ledger, "
        f"{len(report.reservations)} from open reservations"
    )
    raise typer.Exit(0 if report.clean else 1)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per transaction")] = 1000,
) -> None:
    """Import a products (and stock) CSV (same format and rules as `POST /v1/imports`);
    exit 1 if any row was refused (they are listed with their line numbers)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from shelfwise.imports.service import Summary, run_import

    settings = load_settings()
    configure_logging(settings)
    with file.open("rb") as raw:
        total = max(
            sum(chunk.count(b"\n") for chunk in iter(lambda: raw.read(1 << 20), b"")) - 1, 0
        )
    started = time.perf_counter()

    async def work(db: Database) -> Summary:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress:
            bar = progress.add_task("importing", total=total)
            return await run_import(
                db.sessions,
                file,
                job_id=0,
                batch_size=batch_size,
                on_batch=lambda s: progress.update(bar, completed=s.lines),
            )

    summary = _with_db(settings, work)
    seconds = time.perf_counter() - started
    for error in summary.errors:
        console.print(f"[red]line {error['line']}[/]: {error['error']}")
    console.print(
        f"{summary.imported} rows imported ({summary.created} new), {summary.bad} refused, "
        f"{summary.stock_changed} stock levels changed, {summary.lines / seconds:,.0f} lines/s"
    )
    raise typer.Exit(1 if summary.bad else 0)


@app.command("expire-reservations")
def expire_reservations_command() -> None:
    """Release every reservation whose time is up (each exactly once)."""
    from shelfwise.clock import SystemClock
    from shelfwise.orders.expiry import expire_reservations

    settings = load_settings()
    configure_logging(settings)

    async def work(db: Database) -> int:
        async with db.sessions() as session:
            return await expire_reservations(session, now=SystemClock().now())

    console.print(f"expired {_with_db(settings, work)} reservations")


@app.command("prune-idempotency-keys")
def prune_idempotency_keys_command() -> None:
    """Delete idempotency records older than the retention (24 h by default)."""
    from datetime import timedelta

    from shelfwise.clock import SystemClock
    from shelfwise.idempotency.service import prune_idempotency_keys

    settings = load_settings()
    configure_logging(settings)
    cutoff = SystemClock().now() - timedelta(hours=settings.idempotency_retention_hours)

    async def work(db: Database) -> int:
        async with db.sessions() as session:
            return await prune_idempotency_keys(session, older_than=cutoff)

    console.print(f"pruned {_with_db(settings, work)} idempotency keys")


@app.command()
def worker(
    name: Annotated[str | None, typer.Option(help="Worker name (default host-pid)")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve /metrics on this port")] = None,
) -> None:
    """Run the job worker and the outbox relay; SIGTERM or Ctrl-C stops it gracefully."""
    from shelfwise.jobs.worker import run_worker
    from shelfwise.observability.tracing import configure_tracing

    settings = load_settings()
    configure_logging(settings)
    configure_tracing("shelfwise-worker")  # only with an OTLP endpoint in OTEL_*
    url = _database_url(settings)
    _start_metrics_server(settings.host, metrics_port or settings.worker_metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, url, stop, name=name or settings.instance_id or None)

    asyncio.run(main())


@app.command()
def consume(
    queue: Annotated[str, typer.Option(help="Queue to declare, bind and consume")],
    events: Annotated[list[str], typer.Option(help="Binding pattern, e.g. 'order.*' (repeat)")],
    handler: Annotated[
        str | None, typer.Option(help="module:function to run per event (default: log it)")
    ] = None,
) -> None:
    """Example inbox consumer of the event bus (docs/events.md); SIGTERM stops it."""
    from shelfwise.broker.example import load_handler, run_consumer

    settings = load_settings()
    configure_logging(settings)
    if not settings.broker_url:
        raise typer.BadParameter("set SHELFWISE_BROKER_URL (amqp://...)")
    url = _database_url(settings)
    work = run_consumer(settings, url, queue=queue, patterns=events, handler=load_handler(handler))
    asyncio.run(work)


@app.command("replay-dead-letters")
def replay_dead_letters_command(
    queue: Annotated[str, typer.Option(help="The queue whose <queue>.dead to replay")],
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many")] = None,
) -> None:
    """Send a consumer queue's dead letters back to it (after fixing the cause)."""
    from shelfwise.broker.consumer import replay_dead_letters

    settings = load_settings()
    configure_logging(settings)
    if not settings.broker_url:
        raise typer.BadParameter("set SHELFWISE_BROKER_URL (amqp://...)")
    count = asyncio.run(replay_dead_letters(settings.broker_url, queue=queue, limit=limit))
    console.print(f"replayed {count} dead letters to {queue}")


def _start_metrics_server(host: str, port: int | None) -> None:
    if not port:
        return
    from prometheus_client import start_http_server

    try:
        start_http_server(port, addr=host)
    except OSError as exc:  # metrics are worth a warning, not a worker that will not start
        console.print(f"[yellow]worker metrics not served on {host}:{port}: {exc}[/]")


def _start_worker_process(metrics_port: int) -> subprocess.Popen[bytes]:
    """The worker as a child process: its own event loop and GIL, like in production. It
    dies with this process, even by kill -9 (`PR_SET_PDEATHSIG`), instead of lingering."""
    from shelfwise.cluster.supervisor import die_with_parent

    return subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [sys.executable, "-m", "shelfwise.cli", "worker", "--metrics-port", str(metrics_port)],
        preexec_fn=die_with_parent,
    )


def _stop_worker_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # Ctrl-C already reached it; SIGTERM is a no-op
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    workers: Annotated[int, typer.Option(min=1)] = 1,
    role: Annotated[
        ServerRole | None,
        typer.Option(help="all (default), api (no live endpoints) or live (only those)"),
    ] = None,
) -> None:
    """Run the API server (uvicorn with uvloop and httptools)."""
    if role is not None:  # uvicorn's factory reloads settings: pass it on by environment
        os.environ["SHELFWISE_SERVER_ROLE"] = role.value
    port = port or load_settings().port
    # The app reloads settings in uvicorn's factory: the default instance id goes by env.
    os.environ.setdefault("SHELFWISE_INSTANCE_ID", f"{socket.gethostname()}:{port}")
    settings = load_settings()
    configure_logging(settings)
    _database_url(settings)
    _serve(settings, host or settings.host, port, workers)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _raise_open_files_limit(wanted: int) -> None:
    """Every connection is a file descriptor: lift the soft limit towards `wanted` (never
    above the hard limit, which only an administrator can raise) and say if it falls short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        log.warning("open_files_limit_low", wanted=wanted, hard_limit=hard)


def _serve(settings: Settings, host: str, port: int, workers: int) -> None:
    from shelfwise.http.server_protocol import ShelfwiseHttpToolsProtocol

    # uvicorn drains on SIGTERM, then re-raises the signal. Under the default disposition
    # that kills the process (exit 143) and skips atexit handlers, such as the one that
    # stops the embedded PostgreSQL. A drained server exits normally instead.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _raise_open_files_limit(settings.server_limit_concurrency + 256)  # + pools, logs, files
    uvicorn.run(
        "shelfwise.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        # httptools, plus a header deadline (slowloris), a header size limit and
        # problem+json parser errors: see http/server_protocol.py.
        http=ShelfwiseHttpToolsProtocol,
        access_log=False,
        # The app applies X-Forwarded-* itself, from `trusted_proxies` only; uvicorn's
        # own handling would trust 127.0.0.1 (or FORWARDED_ALLOW_IPS) behind our back.
        proxy_headers=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=5,
        limit_concurrency=settings.server_limit_concurrency,
        backlog=settings.server_backlog,
        # With --workers N, uvicorn kills a worker that has not finished start-up within
        # this many seconds and starts another (default 5). On a loaded host Shelfwise's
        # start-up (imports, pools, hub) takes longer, and the workers were replaced in a
        # loop, never serving (seen on the busy bench machine, issue 14).
        timeout_worker_healthcheck=60,
    )


@app.command()
def run(
    products: Annotated[int, typer.Option(min=0)] = 200,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Everything for local development: embedded Postgres, migrate, seed, API + worker."""
    from shelfwise.migrate import upgrade
    from shelfwise.seed import DEMO_LOGINS

    settings = load_settings()
    configure_logging(settings)
    url = _database_url(settings)
    upgrade(url)
    seed(products=products)
    port = port or settings.port
    console.rule("[bold]Shelfwise is running")
    console.print(f"  API & docs:  http://{settings.host}:{port}/docs")
    console.print(f"  Dashboard:   http://{settings.host}:{port}/")
    console.print(f"  Metrics:     http://{settings.host}:{port}/metrics")
    console.print(f"  Worker:      http://{settings.host}:{port + 1}/metrics (jobs + outbox relay)")
    console.print("  Demo logins (development only):")
    for login in DEMO_LOGINS:
        console.print(f"    {login.role.value:<9} {login.email}  /  {login.password}")
    console.print("  Ctrl-C stops the server, the worker and the embedded database.")
    console.rule()
    sys.stderr.flush()
    worker_process = _start_worker_process(port + 1)
    try:
        _serve(settings, settings.host, port, 1)
    finally:
        _stop_worker_process(worker_process, settings.worker_shutdown_timeout_seconds + 10)


@app.command()
def cluster(
    apis: Annotated[int, typer.Option(min=1, help="API instances")] = 3,
    workers: Annotated[int, typer.Option(min=0, help="Job workers")] = 2,
    live_instances: Annotated[
        int, typer.Option(min=0, help="Live instances (serve --role live); 0: APIs serve streams")
    ] = 1,
    http_port: Annotated[int, typer.Option(help="nginx, plain HTTP")] = 8080,
    https_port: Annotated[int, typer.Option(help="nginx, TLS")] = 8443,
    run_dir: Annotated[Path, typer.Option(help="Configs, logs, data")] = Path("var/cluster"),
    products: Annotated[int, typer.Option(min=0)] = 200,
) -> None:
    """The production topology on one machine (docs/deploy.md): pgbouncer, Redis, API
    instances, workers and nginx on :8080/:8443. Ctrl-C stops every process."""
    from shelfwise.cluster.binaries import MissingBinaryError
    from shelfwise.cluster.runner import ClusterRequest, run_cluster

    settings = load_settings()
    configure_logging(settings)
    request = ClusterRequest(
        run_dir=run_dir,
        database_url=settings.database_url,
        apis=apis,
        workers=workers,
        lives=live_instances,
        http_port=http_port,
        https_port=https_port,
        products=products,
    )
    try:
        code = run_cluster(request, console)
    except MissingBinaryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


app.add_typer(db_app, name="db")  # shelfwise db top
app.command("drill")(drill)  # shelfwise drill NAME | --list (docs/drills.md)


if __name__ == "__main__":
    app()
