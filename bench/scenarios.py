"""The benchmark scenarios: a registry, so a new one is a single decorated function.

A scenario turns the seeded data into the list of request paths the load generator picks
from at random. Paths are the same for Shelfwise and the baseline app, so a scenario that
the baseline also serves gets a throughput ratio and a target for it:

    @scenario("search", "GET /v1/products?q=red mug", min_ratio=0.3)
    def search(data: BenchData) -> list[str]:
        return ["/v1/products?q=red%20mug"]

A scenario the baseline does not implement sets `baseline=False`; it is then measured
against Shelfwise alone and judged only on latency.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PathsFn = Callable[["BenchData"], list[str]]


@dataclass(frozen=True, slots=True)
class BenchData:
    """What seeding produced, for scenarios to build their requests from."""

    product_ids: list[str]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    paths: PathsFn
    min_ratio: float | None = None  # target: Shelfwise rps >= min_ratio x baseline rps
    baseline: bool = True


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, description: str, *, min_ratio: float | None = None, baseline: bool = True
) -> Callable[[PathsFn], PathsFn]:
    def register(paths: PathsFn) -> PathsFn:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(name, description, paths, min_ratio, baseline)
        return paths

    return register


@scenario("product_by_id", "GET /v1/products/{id}, a random seeded id", min_ratio=0.6)
def product_by_id(data: BenchData) -> list[str]:
    return [f"/v1/products/{product_id}" for product_id in data.product_ids]


@scenario("list_50", "GET /v1/products?limit=50, first page by created_at", min_ratio=0.5)
def list_50(data: BenchData) -> list[str]:
    return ["/v1/products?limit=50"]
