"""`shelfwise drill NAME [--quick]` and `shelfwise drill --list` (registered in cli.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shelfwise.config import load_settings
from shelfwise.drills.base import DrillRefused, refuse_production

console = Console()


def drill(
    name: Annotated[str | None, typer.Argument(help="The drill to run (see --list)")] = None,
    list_drills: Annotated[bool, typer.Option("--list", help="List the drills")] = False,
    quick: Annotated[bool, typer.Option(help="Smaller and shorter (what the suite runs)")] = False,
    server_url: Annotated[
        str | None,
        typer.Option(help="PostgreSQL server to use (default: DATABASE_URL, else embedded)"),
    ] = None,
) -> None:
    """Make one classic failure happen on a scratch database and show its signal and fix."""
    from shelfwise.drills.registry import DRILLS
    from shelfwise.drills.runner import print_outcome, run_drill
    from shelfwise.drills.system import scratch_database

    if list_drills or name is None:
        for each in DRILLS.values():
            console.print(f"{each.name:24} {each.summary}")
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
    except DrillRefused as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    url = server_url or settings.database_url or _embedded(Path(settings.data_dir))
    # Migrated outside the event loop: Alembic's async env runs its own loop.
    with scratch_database(url) as scratch:
        scoped = settings.model_copy(update={"database_url": scratch})
        outcome = asyncio.run(run_drill(DRILLS[name], scoped, quick=quick))
    print_outcome(console, DRILLS[name], outcome)
    raise typer.Exit(0 if outcome.seen else 1)


def _embedded(data_dir: Path) -> str:
    from shelfwise.embedded import start_embedded

    return start_embedded(data_dir, database="postgres")
