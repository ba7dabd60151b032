"""`shelfwise drill NAME [--quick] [--url URL | --served]` and `shelfwise drill --list`
(registered in cli.py).

Without `--url` a drill runs in-process on a scratch database (decision 0028); with it,
the drills that have an HTTP form break the running server at that loopback URL and read
its `/metrics` and, given `--log-file`, its log (drills/served.py). `--served` is the URL
`make run` serves on (SHELFWISE_HOST / SHELFWISE_PORT)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shelfwise.config import Settings, load_settings
from shelfwise.drills.base import DrillRefused, Outcome, refuse_production

console = Console()


def drill(
    name: Annotated[str | None, typer.Argument(help="The drill to run (see --list)")] = None,
    list_drills: Annotated[bool, typer.Option("--list", help="List the drills")] = False,
    quick: Annotated[bool, typer.Option(help="Smaller and shorter (what the suite runs)")] = False,
    server_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server to use (default: DATABASE_URL, else embedded)"),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="Break the running Shelfwise at this loopback URL over HTTP"),
    ] = None,
    served: Annotated[
        bool, typer.Option(help="--url of the server `make run` started (host/port settings)")
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option(help="The served process's log, to find its log lines")
    ] = None,
    admin_email: Annotated[str | None, typer.Option(help="Admin of the served system")] = None,
    admin_password: Annotated[str | None, typer.Option(help="Its password")] = None,
) -> None:
    """Make one classic failure happen (on a scratch database, or a running server with
    --url) and show its signal and fix."""
    from shelfwise.drills.registry import DRILLS
    from shelfwise.drills.runner import print_outcome
    from shelfwise.drills.served_drills import SERVED_DRILLS

    if list_drills or name is None:
        for each in DRILLS.values():
            over_http = "  (also --url)" if each.name in SERVED_DRILLS else ""
            console.print(f"{each.name:24} {each.summary}{over_http}")
        return
    if name not in DRILLS:
        raise typer.BadParameter(f"unknown drill {name!r}; see `shelfwise drill --list`")
    try:
        # Checked before the settings load: production settings may refuse to load here
        # for other reasons, and the refusal must not depend on which check runs first.
        if os.environ.get("SHELFWISE_ENV", "").strip().lower() == "production":
            raise DrillRefused("drills make failures happen on purpose: refused in production")
        settings = load_settings()
        refuse_production(settings)
        if served:
            url = f"http://{settings.host}:{settings.port}"
        if url is not None:
            if name not in SERVED_DRILLS:
                raise DrillRefused(
                    f"{name} runs in-process only (drop --url); over HTTP: "
                    + ", ".join(SERVED_DRILLS)
                )
            credentials = (admin_email, admin_password)
            outcome = _over_http(name, url, credentials, log_file, quick=quick)
        else:
            outcome = _in_process(name, settings, server_url, quick=quick)
    except DrillRefused as exc:
        console.print(f"[red]{exc}[/red]", markup=True)
        raise typer.Exit(2) from exc
    print_outcome(console, DRILLS[name], outcome)
    raise typer.Exit(0 if outcome.seen else 1)


def _in_process(name: str, settings: Settings, server_url: str | None, *, quick: bool) -> Outcome:
    from shelfwise.drills.registry import DRILLS
    from shelfwise.drills.runner import run_drill
    from shelfwise.drills.system import scratch_database

    database = server_url or settings.database_url or _embedded(Path(settings.data_dir))
    # Migrated outside the event loop: Alembic's async env runs its own loop.
    with scratch_database(database) as scratch:
        scoped = settings.model_copy(update={"database_url": scratch})
        return asyncio.run(run_drill(DRILLS[name], scoped, quick=quick))


def _over_http(
    name: str,
    url: str,
    credentials: tuple[str | None, str | None],
    log_file: Path | None,
    *,
    quick: bool,
) -> Outcome:
    from shelfwise.drills.served_drills import run_served
    from shelfwise.identity.models import Role
    from shelfwise.seed import DEMO_LOGINS

    # The development seed's admin, as `make run` prints it, unless told otherwise.
    admin = next(login for login in DEMO_LOGINS if login.role is Role.ADMIN)
    email, password = credentials
    signed_in = (email or admin.email, password or admin.password)
    return asyncio.run(run_served(name, url, signed_in, log_file=log_file, quick=quick))


def _embedded(data_dir: Path) -> str:
    from shelfwise.embedded import start_embedded

    return start_embedded(data_dir, database="postgres")
