"""bench.stack's rounds: the run order and how each side's figures are summarised."""

from __future__ import annotations

from typing import Any

from bench.servers import template_name
from bench.stack import median_figures, ratios, step_order

CLEAN = {"oversold_levels": 0, "reconcile_exit": 0, "reconcile_tail": []}
DRIFT = {"oversold_levels": 0, "reconcile_exit": 1, "reconcile_tail": ["1 level drifts"]}


def round_figures(n: int, rps: float, cpu: int, integrity: dict[str, Any]) -> dict[str, Any]:
    return {
        "requests": int(rps * 10),
        "rps": rps,
        "p99_ms": 100.0 + n,
        "server_cpu_us_per_req": cpu,
        "db_cpu_us_per_req": cpu // 2,
        "integrity": integrity,
        "round": n,
        "database": f"copy_{n}",
        "copy_s": 0.4,
        "stock": {"orderable_products": 10_000},
    }


def test_one_round_runs_each_side_once_shelfwise_first() -> None:
    assert step_order(1) == [(1, "shelfwise"), (1, "samework"), (1, "baseline")]


def test_even_rounds_reverse_the_order_so_no_side_is_always_first() -> None:
    steps = step_order(2)
    assert [side for _, side in steps] == [
        "shelfwise",
        "samework",
        "baseline",
        "baseline",
        "samework",
        "shelfwise",
    ]
    assert [n for n, _ in steps] == [1, 1, 1, 2, 2, 2]


def test_median_of_each_figure_keeps_the_rounds_and_the_existing_keys() -> None:
    rounds = [
        round_figures(1, 700.0, 1100, CLEAN),
        round_figures(2, 900.0, 1000, CLEAN),
        round_figures(3, 800.0, 1300, CLEAN),
    ]
    side = median_figures(rounds)
    assert side["rps"] == 800
    assert side["server_cpu_us_per_req"] == 1100
    assert side["p99_ms"] == 102
    assert side["integrity"] == CLEAN
    assert side["rounds"] == rounds
    assert side["spread_pct"]["rps"] == 25.0  # (900 - 700) / 800
    assert not {"round", "copy_s", "database"} & side.keys()


def test_two_rounds_give_their_mean_and_a_drifting_round_is_reported() -> None:
    side = median_figures(
        [round_figures(1, 700.0, 1000, DRIFT), round_figures(2, 800.0, 1001, CLEAN)]
    )
    assert side["rps"] == 750
    assert side["server_cpu_us_per_req"] == 1000.5
    assert side["integrity"] == DRIFT


def test_one_round_is_its_own_median_without_a_spread() -> None:
    side = median_figures([round_figures(1, 700.0, 1000, CLEAN)])
    assert side["rps"] == 700
    assert "spread_pct" not in side


def test_ratios_are_shelfwise_over_each_other_side() -> None:
    part = {
        "shelfwise": {"rps": 500.0, "server_cpu_us_per_req": 1000},
        "samework": {"rps": 1000.0, "server_cpu_us_per_req": 700},
        "baseline": {"rps": 2000.0, "server_cpu_us_per_req": 500},
    }
    assert ratios(part) == {"vs_samework": 0.5, "vs_baseline": 0.25}
    assert ratios(part, "server_cpu_us_per_req") == {"vs_samework": 1.43, "vs_baseline": 2.0}


def test_the_template_is_named_after_its_seed_and_schema() -> None:
    assert template_name(10_000) == template_name(10_000)
    assert template_name(10_000) != template_name(2_000)
