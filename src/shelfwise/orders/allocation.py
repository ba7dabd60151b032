"""Which location serves an order: a pure function, so the policy is easy to test.

Policy (docs/decisions/0009-order-location.md): an order is served from ONE location.
With `location_id`, that one. Without, every location that can serve every line from
its unreserved stock qualifies; they are tried in order of the most unreserved units of
the ordered products (keeping stock spread evenly), ties broken by location id so the
choice is deterministic. No location can serve all lines → the order is refused; orders
are never split.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shelfwise.inventory.domain import LevelAvailability


@dataclass(frozen=True, slots=True)
class Candidate:
    location_id: uuid.UUID
    levels: dict[uuid.UUID, LevelAvailability]  # product_id -> level at this location


def candidate_locations(
    quantities: Mapping[uuid.UUID, int], levels: Sequence[LevelAvailability]
) -> list[Candidate]:
    by_location: dict[uuid.UUID, dict[uuid.UUID, LevelAvailability]] = defaultdict(dict)
    for level in levels:
        by_location[level.location_id][level.product_id] = level
    qualified = [
        Candidate(location_id, found)
        for location_id, found in by_location.items()
        if all(p in found and found[p].available >= q for p, q in quantities.items())
    ]
    return sorted(
        qualified,
        key=lambda c: (-sum(level.available for level in c.levels.values()), str(c.location_id)),
    )


def best_availability(
    quantities: Mapping[uuid.UUID, int], levels: Sequence[LevelAvailability]
) -> list[dict[str, object]]:
    """Per line: what was asked, and the most any single location has unreserved."""
    best: dict[uuid.UUID, int] = defaultdict(int)
    for level in levels:
        best[level.product_id] = max(best[level.product_id], level.available)
    return [
        {"product_id": str(p), "requested": q, "available": best[p]} for p, q in quantities.items()
    ]
