"""Every drill by name, in the order `shelfwise drill --list` prints them."""

from __future__ import annotations

from shelfwise.drills import blocked_loop
from shelfwise.drills.base import Drill

DRILLS: dict[str, Drill] = {drill.name: drill for drill in (blocked_loop.DRILL,)}
