"""Targets, the printed table and the JSON record of a benchmark run.

Throughput targets are ratios to the raw baseline measured in the same run, because the
absolute figure depends on the machine; the latency and memory targets are absolute.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult
from bench.scenarios import Scenario
from bench.servers import Usage

P99_LIMIT_MS = 50.0
RSS_LIMIT_MB = 200.0
MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Run:
    """One measured load run of one scenario against one server."""

    scenario: str
    server: str
    load: LoadResult
    server_cpu_s: float  # CPU time the server process used during the run
    db_cpu_s: float  # CPU time the PostgreSQL cluster used during the run
    rest_cpu_s: float  # every other busy CPU second: load generator, harness, neighbours
    quiet_before: bool | None = None  # was the machine idle when the run started?

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.load.requests * 1e6 if self.load.requests else 0.0

    @property
    def server_cpu_pct(self) -> float:
        return self._pct(self.server_cpu_s)

    @property
    def db_cpu_pct(self) -> float:
        return self._pct(self.db_cpu_s)

    @property
    def rest_cpu_pct(self) -> float:
        return self._pct(self.rest_cpu_s)

    def _pct(self, seconds: float) -> float:
        """Seconds of CPU during the run as percent of one core."""
        return 100 * seconds / self.load.duration_s if self.load.duration_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "server": self.server,
            **self.load.to_json(),
            "server_cpu_s": round(self.server_cpu_s, 2),
            "server_cpu_pct": round(self.server_cpu_pct, 1),
            "server_cpu_us_per_request": round(self.cpu_us_per_request, 1),
            "db_cpu_s": round(self.db_cpu_s, 2),
            "db_cpu_pct": round(self.db_cpu_pct, 1),
            "rest_cpu_s": round(self.rest_cpu_s, 2),
            "rest_cpu_pct": round(self.rest_cpu_pct, 1),
            "quiet_before": self.quiet_before,
        }


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    measured: str
    passed: bool


def _find(runs: list[Run], scenario: str, server: str) -> Run | None:
    return next((r for r in runs if r.scenario == scenario and r.server == server), None)


def judge(scenarios: list[Scenario], runs: list[Run], usage: dict[str, Usage]) -> list[Verdict]:
    verdicts = []
    for sc in scenarios:
        mine, base = _find(runs, sc.name, "shelfwise"), _find(runs, sc.name, "baseline")
        if mine is None:
            continue
        if sc.min_ratio is not None and base is not None and base.load.rps:
            ratio = mine.load.rps / base.load.rps
            verdicts.append(
                Verdict(
                    f"{sc.name}: rps >= {sc.min_ratio:.2f} x baseline",
                    f"{ratio:.2f} x ({mine.load.rps:,.0f} / {base.load.rps:,.0f})",
                    ratio >= sc.min_ratio,
                )
            )
        verdicts.append(
            Verdict(
                f"{sc.name}: p99 <= {P99_LIMIT_MS:.0f} ms",
                f"{mine.load.p99_ms:.1f} ms",
                mine.load.p99_ms <= P99_LIMIT_MS,
            )
        )
        if mine.load.errors:
            verdicts.append(Verdict(f"{sc.name}: no errors", f"{mine.load.errors}", False))
    if "shelfwise" in usage:
        peak = usage["shelfwise"].peak_rss / MB
        verdicts.append(
            Verdict(
                f"shelfwise peak RSS <= {RSS_LIMIT_MB:.0f} MB",
                f"{peak:.0f} MB",
                peak <= RSS_LIMIT_MB,
            )
        )
    return verdicts


def table(runs: list[Run], scenarios: list[Scenario]) -> str:
    header = (
        f"{'scenario':<16}{'server':<11}{'rps':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'ratio':>7}{'us/req':>8}{'cpu%':>6}{'db%':>5}{'rest%':>6}"
    )
    lines = [header, "-" * len(header)]
    for sc in scenarios:
        base = _find(runs, sc.name, "baseline")
        for run in (r for r in runs if r.scenario == sc.name):
            load = run.load
            ratio = (
                f"{load.rps / base.load.rps:.2f}"
                if run.server != "baseline" and base and base.load.rps
                else ""
            )
            lines.append(
                f"{run.scenario:<16}{run.server:<11}{load.rps:>9,.0f}{load.p50_ms:>9.1f}"
                f"{load.p90_ms:>9.1f}{load.p99_ms:>9.1f}{load.errors:>8}{ratio:>7}"
                f"{run.cpu_us_per_request:>8.0f}{run.server_cpu_pct:>6.0f}"
                f"{run.db_cpu_pct:>5.0f}{run.rest_cpu_pct:>6.0f}"
                + (" !" if run.quiet_before is False else "")
            )
    if any(run.quiet_before is False for run in runs):
        lines.append("! the machine was busy with other work when this run started")
    lines.append(
        "us/req: server CPU per request; cpu%/db%/rest%: server, PostgreSQL and everything "
        "else (load generator, other work), in % of one core"
    )
    return "\n".join(lines)


def memory_lines(usage: dict[str, Usage]) -> list[str]:
    return [
        f"{name:<11} RSS idle {u.idle_rss / MB:6.1f} MB   peak {u.peak_rss / MB:6.1f} MB"
        f"   end {u.last_rss / MB:6.1f} MB"
        for name, u in usage.items()
    ]


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    return [
        f"{'PASS' if v.passed else 'FAIL'}  {v.target:<40} measured {v.measured}" for v in verdicts
    ]


def write_json(
    path: Path,
    meta: dict[str, Any],
    runs: list[Run],
    usage: dict[str, Usage],
    verdicts: list[Verdict],
) -> None:
    record = {
        **meta,
        "runs": [run.to_json() for run in runs],
        "memory": {name: asdict(u) for name, u in usage.items()},
        "targets": [asdict(v) for v in verdicts],
        "all_passed": all(v.passed for v in verdicts),
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
