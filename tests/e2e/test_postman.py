"""The Postman collection, run by newman against a real `shelfwise serve`.

`postman/shelfwise.postman_collection.json` is the API's regression suite as an outside
client sees it (auth, catalog, stock, orders, imports, webhooks, rate limits, live
endpoints, problem+json on every error). Here it runs against a served process with
the demo logins seeded; any failing assertion fails the test. Two more checks keep the
collection honest: every OpenAPI operation has a request in it, and the committed JSON
is what `postman/build_collection.py` writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shelfwise.app import create_app
from shelfwise.config import Environment, Settings
from tests.e2e.test_server_process import free_port
from tests.support import require_binary, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "postman" / "shelfwise.postman_collection.json"
ENVIRONMENT = ROOT / "postman" / "shelfwise.postman_environment.json"
BUILDER = ROOT / "postman" / "build_collection.py"

STARTUP_TIMEOUT = 45.0  # ~3 s on a quiet machine, 25 s seen with the suite on 2 cores
NEWMAN_TIMEOUT = 75.0  # the run: ~12 s on a quiet machine, 30 s seen with the suite on 2 cores
MIN_ASSERTIONS = 400

# OpenAPI operations a collection run cannot exercise, with the reason. Empty today:
# every operation has a request (the SSE stream is read through `pm.sendRequest`).
NOT_APPLICABLE: dict[tuple[str, str], str] = {}


def require_newman() -> Path:
    """newman from `npm ci`, or skip — unless SHELFWISE_TEST_REQUIRE=all, where it fails."""
    require_binary("node")
    if NEWMAN.exists():
        return NEWMAN
    reason = "newman is not installed (run `npm ci` in the repository)"
    if os.environ.get("SHELFWISE_TEST_REQUIRE") == "all":
        pytest.fail(reason + " and SHELFWISE_TEST_REQUIRE=all")
    pytest.skip(reason)


def server_env(database_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "SHELFWISE_ENV": "test",
        "SHELFWISE_DATA_DIR": str(data_dir),
        "SHELFWISE_DB_POOL_SIZE": "4",
        "SHELFWISE_DB_MAX_OVERFLOW": "4",
        # Raised: the collection logs in and registers more than a minute's default share.
        # The per-account failed-login lockout keeps its default (5/minute): the rate-limit
        # folder needs a reachable 429 with Retry-After and RateLimit headers.
        "SHELFWISE_RATE_LIMIT_LOGIN": "1000/minute",
        "SHELFWISE_RATE_LIMIT_REGISTER": "1000/minute",
        "SHELFWISE_RATE_LIMIT_REFRESH": "1000/minute",
        "SHELFWISE_RATE_LIMIT_ANONYMOUS": "10000/minute",
        # The SSE request revokes its key mid-stream; open streams are re-checked this often.
        "SHELFWISE_LIVE_RECHECK_SECONDS": "1",
        # The environment's webhook receiver is on 127.0.0.1 (nothing listens there).
        "SHELFWISE_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        # Cheaper password hashing (the settings' floor): a run makes ~20 logins and
        # registrations, each an argon2 hash on a 2-core machine shared with the suite.
        "SHELFWISE_ARGON2_MEMORY_KIB": "8192",
        "SHELFWISE_ARGON2_TIME_COST": "1",
        # The environment's `corsOrigin`, for the preflight requests.
        "SHELFWISE_CORS_ORIGINS": '["https://console.shelfwise.example"]',
    }


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[Served]:
    """`shelfwise serve` on a free port and a `shelfwise worker`, as on any Shelfwise the
    collection runs against, with `shelfwise seed`'s demo logins."""
    env = server_env(database_url, tmp_path)
    port = free_port()
    log_path = tmp_path / "server.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # The worker runs the import job and relays events to the live endpoints.
        for command, log_name in (
            (["serve", "--host", "127.0.0.1", "--port", str(port)], "server.log"),
            (["worker", "--name", "newman"], "worker.log"),
        ):
            with (tmp_path / log_name).open("wb") as log:
                processes.append(
                    subprocess.Popen(
                        [str(SHELFWISE), *command],
                        cwd=tmp_path,  # no stray .env is picked up
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        # Seeded while the server and the worker start (the collection needs only logins).
        seeded = subprocess.run(
            [str(SHELFWISE), "seed", "--products", "5"],
            cwd=tmp_path,  # no stray .env is picked up
            env=env,
            capture_output=True,
            timeout=60,
        )
        assert seeded.returncode == 0, seeded.stdout.decode() + seeded.stderr.decode()
        yield Served(processes[0], f"http://127.0.0.1:{port}", log_path)
    finally:
        # Graceful shutdown is test_server_process's and test_worker_processes' subject;
        # here only the time it takes: the worker's drain would cost seconds.
        for process in processes:
            process.kill()
        for process in processes:
            process.wait(timeout=10)


def failures(report: dict[str, Any]) -> list[str]:
    return [
        f"{f['source'].get('name')}: {f['error'].get('test')}: {f['error'].get('message')}"
        for f in report["run"]["failures"]
    ]


@pytest.mark.e2e
async def test_postman_collection_passes_against_a_served_process(
    served: Served, tmp_path: Path
) -> None:
    newman = require_newman()

    async def ready() -> bool:
        assert served.process.poll() is None, served.log_path.read_text(errors="replace")
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(served.base_url + "/readyz")).status_code == 200
        except httpx.TransportError:
            return False

    started = time.monotonic()
    await wait_until(ready, timeout=STARTUP_TIMEOUT, interval=0.1, what="/readyz")
    ready_after = time.monotonic() - started
    report_path = tmp_path / "newman.json"
    completed = subprocess.run(
        [
            str(newman),
            "run",
            str(COLLECTION),
            "-e",
            str(ENVIRONMENT),
            "--env-var",
            f"baseUrl={served.base_url}",
            "--working-dir",
            str(ROOT),  # the image upload's file is postman/fixtures/pixel.png
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report_path),
            "--color",
            "off",
            "--disable-unicode",
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=NEWMAN_TIMEOUT,
    )
    output = completed.stdout.decode(errors="replace")[-6000:]
    logs = "".join(
        f"\n--- {name}\n" + (tmp_path / name).read_text(errors="replace")[-3000:]
        for name in ("server.log", "worker.log")
    )
    assert report_path.exists(), output + completed.stderr.decode(errors="replace") + logs
    report = json.loads(report_path.read_text())
    stats = report["run"]["stats"]
    timings = report["run"]["timings"]
    print(  # the figures a reviewer wants in the log (pytest -s / -rA)
        f"newman: {stats['requests']['total']} requests, "
        f"{stats['assertions']['total']} assertions, {stats['assertions']['failed']} failed; "
        f"server ready after {ready_after:.1f} s, newman ran "
        f"{(timings['completed'] - timings['started']) / 1000:.1f} s"
    )
    assert failures(report) == [], output + logs
    assert stats["requests"]["failed"] == 0, output
    assert stats["assertions"]["failed"] == 0, output
    assert stats["assertions"]["total"] >= MIN_ASSERTIONS, stats["assertions"]
    assert completed.returncode == 0, output


def _collection_requests(items: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for item in items:
        if "item" in item:
            yield from _collection_requests(item["item"])
            continue
        request = item["request"]
        path = "/" + "/".join(request["url"]["path"])
        yield request["method"].upper(), path


def _operation_pattern(template: str) -> re.Pattern[str]:
    """`/v1/products/{product_id}` → matches `/v1/products/{{productId}}` or a literal id."""
    parts = [
        "[^/]+" if segment.startswith("{") else re.escape(segment)
        for segment in template.split("/")
    ]
    return re.compile("^" + "/".join(parts) + "$")


def test_every_openapi_operation_has_a_request_in_the_collection() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env=Environment.TEST,  # debug routes included, as the test server has them
        database_url="postgresql://unused@127.0.0.1/unused",  # never connected
    )
    document = create_app(settings).openapi()
    collection = json.loads(COLLECTION.read_text())
    requests = set(_collection_requests(collection["item"]))
    methods = {"get", "put", "post", "patch", "delete"}
    missing = []
    for template, item in document["paths"].items():
        pattern = _operation_pattern(template)
        for method in methods & set(item):
            operation = (method.upper(), template)
            if operation in NOT_APPLICABLE:
                continue
            if not any(m == method.upper() and pattern.match(p) for m, p in requests):
                missing.append(f"{method.upper()} {template}")
    assert missing == [], f"operations without a request in the Postman collection: {missing}"
    assert len(requests) > 50  # the check saw the collection, not an empty file


def test_collection_json_is_what_the_builder_writes() -> None:
    checked = subprocess.run(
        [sys.executable, str(BUILDER), "--check"], capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr
