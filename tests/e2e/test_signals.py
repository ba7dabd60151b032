"""Dashboards and alerts cannot name a metric that does not exist.

`promtool` checks the rule files and runs their unit tests (one per alert). Then a real
`shelfwise serve` and a real `shelfwise worker` are started and scraped: every
`shelfwise_*` series named in a Grafana dashboard, a recording rule or an alert must be
exposed by one of them (histograms through `_bucket`/`_sum`/`_count`, counters through
`_total`). Renaming a metric without its dashboards fails here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import require_binary, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
METRIC = re.compile(r"\bshelfwise_[a-z0-9_]+\b")


def test_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = require_binary("promtool")
    rules = sorted(str(path) for path in (PROMETHEUS / "rules").glob("*.yml"))
    checked = subprocess.run(
        [promtool, "check", "rules", *rules], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(str(path) for path in (PROMETHEUS / "tests").glob("*.yml"))
    tested = subprocess.run(
        [promtool, "test", "rules", *tests],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROMETHEUS,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_and_a_runbook() -> None:
    alerts = {
        rule["alert"]
        for path in (PROMETHEUS / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for path in (PROMETHEUS / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set(), "alerts without a firing unit test"
    runbook = (ROOT / "docs" / "observability.md").read_text().lower()
    missing = {alert for alert in alerts if f"runbook-{alert.lower()}" not in runbook}
    assert missing == set(), "alerts without a runbook entry in docs/observability.md"


def named_metrics() -> dict[str, set[str]]:
    """Every shelfwise_* name in a dashboard, recording rule or alert, and where."""
    names: dict[str, set[str]] = {}
    for path in DASHBOARDS.glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                for name in METRIC.findall(target["expr"]):
                    names.setdefault(name, set()).add(path.name)
    for path in (PROMETHEUS / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in METRIC.findall(rule["expr"]):
                    names.setdefault(name, set()).add(path.name)
    return names


def exposed_series(exposition: str) -> set[str]:
    series: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        if family.type == "counter":
            series |= {family.name + "_total", family.name}
        elif family.type == "histogram":
            series |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
        else:
            series.add(family.name)
    return series


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def processes(database_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`shelfwise serve` and `shelfwise worker`, with the URLs of their /metrics."""
    api_port, worker_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_DATA_DIR": str(tmp_path),
        "SHELFWISE_LOG_JSON": "true",
        "SHELFWISE_DB_POOL_SIZE": "2",
        "SHELFWISE_DB_MAX_OVERFLOW": "2",
        "SHELFWISE_WORKER_POLL_SECONDS": "0.3",
    }
    commands = {
        "api": [str(SHELFWISE), "serve", "--host", "127.0.0.1", "--port", str(api_port)],
        "worker": [str(SHELFWISE), "worker", "--metrics-port", str(worker_port)],
    }
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (tmp_path / f"{name}.log").open("wb") as log:
                started[name] = subprocess.Popen(
                    command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        yield {
            "api": f"http://127.0.0.1:{api_port}/metrics",
            "worker": f"http://127.0.0.1:{worker_port}/metrics",
        }
    finally:
        for name, process in started.items():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.returncode not in (0, None):
                print(name, (tmp_path / f"{name}.log").read_text(errors="replace"))


@pytest.mark.e2e
async def test_every_metric_a_dashboard_or_rule_names_is_exposed(
    processes: dict[str, str],
) -> None:
    scraped: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=5.0) as client:

        async def both_answer() -> bool:
            for name, url in processes.items():
                try:
                    response = await client.get(url)
                except httpx.TransportError:
                    return False
                if response.status_code != 200:
                    return False
                scraped[name] = response.text
            return True

        await wait_until(both_answer, timeout=30, interval=0.2, what="both /metrics")
    exposed = exposed_series(scraped["api"]) | exposed_series(scraped["worker"])
    named = named_metrics()
    assert len(named) > 40  # the parsing found the dashboards and rules
    missing = {name: sorted(where) for name, where in named.items() if name not in exposed}
    assert missing == {}, f"named but not exposed by the API or the worker: {missing}"
    # Both processes watch their own event loop and pools.
    for name in ("api", "worker"):
        assert "shelfwise_event_loop_lag_seconds_bucket" in scraped[name]
    assert 'shelfwise_db_pool_connections{pool="driver",state="in_use"}' in scraped["api"]
