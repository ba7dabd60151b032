"""What every drill shares: its outcome (the signal, whether it appeared, what to read, the
fix), metric reads from the process registry, and the refusal to touch production."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY

from shelfwise.config import Settings

if TYPE_CHECKING:
    from shelfwise.drills.system import DrillSystem


class DrillRefused(Exception):
    """A drill asked to run where it must not (production)."""


@dataclass(slots=True)
class Outcome:
    """What a drill made happen and what it saw: `seen` is computed from the real signal
    (a metric that moved, a log line written, a row in pg_stat_activity), never assumed."""

    signal: str
    seen: bool
    evidence: dict[str, object] = field(default_factory=dict)
    look_at: list[str] = field(default_factory=list)
    fix: str = ""


DrillRun = Callable[["DrillSystem", bool], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Drill:
    name: str
    summary: str
    run: DrillRun  # (system, quick) -> Outcome


def metric(name: str, **labels: str) -> float:
    """A sample's current value in this process (0 when it was never set)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def refuse_production(settings: Settings) -> None:
    if settings.is_production:
        raise DrillRefused("drills make failures happen on purpose: refused in production")
