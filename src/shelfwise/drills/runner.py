"""Run a drill on the app built from settings, and print what it saw."""

from __future__ import annotations

from rich.console import Console

from shelfwise.config import Settings
from shelfwise.drills.base import Drill, Outcome
from shelfwise.drills.system import drill_settings, open_system


async def run_drill(drill: Drill, settings: Settings, *, quick: bool) -> Outcome:
    """Run `drill` on the app built from `settings` (whose database it may break)."""
    async with open_system(drill_settings(settings)) as system:
        return await drill.run(system, quick)


def print_outcome(console: Console, drill: Drill, outcome: Outcome) -> None:
    verdict = "[green]seen[/green]" if outcome.seen else "[red]NOT seen[/red]"
    console.print(f"[bold]{drill.name}[/bold]: {drill.summary}")
    console.print(f"signal {outcome.signal}: {verdict}")
    # Evidence holds SQL, lists and label sets: printed as text, never as Rich markup.
    for name, value in outcome.evidence.items():
        console.print(f"  {name}: {value}", markup=False, soft_wrap=True)
    console.print("look at:")
    for item in outcome.look_at:
        console.print(f"  - {item}", markup=False, soft_wrap=True)
    console.print(f"fix: {outcome.fix}", markup=False, soft_wrap=True)
