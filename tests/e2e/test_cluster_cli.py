"""`shelfwise cluster` (what `make cluster` runs): it starts, serves through nginx, and
Ctrl-C stops every process it started, leaving no orphan behind. Also: `nginx -t` accepts
the configuration the runner renders, and production's `deploy/nginx/shelfwise.conf`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shelfwise.cluster.nginx import DEPLOY_DIR, check_config, render_nginx
from shelfwise.cluster.tls import ensure_self_signed
from shelfwise.cluster.topology import free_port
from tests.live_support import sse_events
from tests.support import require_binary, wait_until

ROOT = Path(__file__).resolve().parents[2]
SHELFWISE = ROOT / ".venv" / "bin" / "shelfwise"

pytestmark = pytest.mark.e2e


def descendants(root: int) -> set[int]:
    """Every live process below `root` (children in their own process groups included)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def pid_running(root: int, command: str, *, missing_ok: bool = False) -> int | None:
    """The pid of the process below `root` whose command line contains `command`."""
    for pid in descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if command in cmdline and alive(pid):
            return pid
    if missing_ok:
        return None
    raise AssertionError(f"no {command!r} below {root}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def change_reaches_a_stream_through_nginx(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as lb:
        login = await lb.post(
            "/v1/auth/login",
            json={"email": "staff@shelfwise.local", "password": "staff-demo-password"},
        )
        assert login.status_code == 200, login.text
        staff = {"Authorization": f"Bearer {login.json()['access_token']}"}
        product = (await lb.get("/v1/products", params={"limit": 1})).json()["data"][0]["id"]
        location = (await lb.get("/v1/locations", headers=staff)).json()["data"][0]["id"]
        async with lb.stream(
            "GET", f"/v1/stream?channels=stock:{product}", headers=staff
        ) as stream:
            assert stream.status_code == 200
            events = sse_events(stream)
            adjusted = await lb.post(
                "/v1/stock/adjustments",
                json={
                    "product_id": product,
                    "location_id": location,
                    "kind": "receipt",
                    "quantity": 7,
                    "reason": "through nginx",
                },
                headers={**staff, "Idempotency-Key": f"cli-{uuid.uuid4().hex}"},
            )
            assert adjusted.status_code == 201, adjusted.text
            async with asyncio.timeout(15):
                async for event in events:
                    if event.id is not None and product in json.dumps(event.data):
                        break


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Not pytest's tmp_path: a concurrent pytest run on the shared box may clean that
    while the cluster still writes to it."""
    directory = Path(tempfile.mkdtemp(prefix="shelfwise-cluster-cli-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def start_runner(
    database_url: str, run_dir: Path, http_port: int, https_port: int, *args: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """`shelfwise cluster` in a session of its own (like a terminal's foreground group)."""
    for name in ("nginx", "pgbouncer", "redis-server", "openssl"):
        require_binary(name)
    log_path = run_dir / "cluster.log"
    with log_path.open("wb") as log:
        runner = subprocess.Popen(
            [
                str(SHELFWISE), "cluster", "--run-dir", str(run_dir / "cluster"),
                "--http-port", str(http_port), "--https-port", str(https_port),
                "--products", "3", *args,
            ],
            env={**os.environ, "DATABASE_URL": database_url, "SHELFWISE_ENV": "test"},
            cwd=run_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own foreground group, like a terminal's
        )  # fmt: skip
    return runner, log_path


async def wait_serving(runner: subprocess.Popen[bytes], log_path: Path, http_port: int) -> None:
    async with httpx.AsyncClient(timeout=5.0) as client:

        async def serving() -> bool:
            assert runner.poll() is None, log_path.read_text(errors="replace")[-3000:]
            try:
                ready = await client.get(f"http://127.0.0.1:{http_port}/readyz")
            except httpx.TransportError:
                return False
            return ready.status_code == 200 and "Ctrl-C stops" in log_path.read_text()

        await wait_until(serving, timeout=120, interval=0.2, what="the cluster through nginx")


def started_at(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/<pid>/stat): tells a pid reused by
    another process from the one seen earlier."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def snapshot(root: int) -> dict[int, str | None]:
    return {pid: started_at(pid) for pid in descendants(root)}


def kill_everything(runner: subprocess.Popen[bytes], seen: dict[int, str | None]) -> None:
    """After a failure: the runner, and whatever it started that is still there (the
    same processes: a pid since reused by someone else is left alone)."""
    seen = {**seen, **snapshot(runner.pid)}
    if runner.poll() is None:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(timeout=10)
    for pid, start in seen.items():
        if alive(pid) and started_at(pid) == start:
            os.kill(pid, signal.SIGKILL)


async def test_ctrl_c_stops_every_process_of_the_cluster(database_url: str, run_dir: Path) -> None:
    http_port, https_port = free_port(), free_port()
    runner, log_path = start_runner(
        database_url, run_dir, http_port, https_port, "--apis", "2", "--workers", "1"
    )
    started: dict[int, str | None] = {}
    seen: dict[int, str | None] = {}  # every process of the run, for the cleanup on failure
    try:
        await wait_serving(runner, log_path, http_port)
        seen = snapshot(runner.pid)
        # It says where everything is, and how to sign in.
        welcome = log_path.read_text(errors="replace")
        for printed in (
            f"http://127.0.0.1:{http_port}/docs",
            f"https://127.0.0.1:{https_port}/",
            "staff@shelfwise.local",
            "staff-demo-password",
        ):
            assert printed in welcome, welcome[-3000:]
        async with httpx.AsyncClient(timeout=5.0, verify=False) as tls_client:  # self-signed
            tls = await tls_client.get(f"https://127.0.0.1:{https_port}/healthz")
        assert tls.status_code == 200
        assert tls.headers["strict-transport-security"].startswith("max-age=")
        # Live through the load balancer: an SSE stream held by one instance (nginx does not
        # buffer it) receives a change written through whichever instance nginx picks,
        # published by the worker's relay and fanned out over Redis.
        await change_reaches_a_stream_through_nginx(f"http://127.0.0.1:{http_port}")

        # A child that dies is restarted by the runner (the local stand-in for Kubernetes).
        worker = pid_running(runner.pid, "worker --name worker-1")
        os.kill(worker, signal.SIGKILL)

        async def worker_is_back() -> bool:
            again = pid_running(runner.pid, "worker --name worker-1", missing_ok=True)
            # The runner logs the restart just after it spawns the child: the new process
            # can be seen before the line is written, so both are part of the condition.
            restarted = "cluster_child_restarted" in log_path.read_text(errors="replace")
            return again not in (None, worker) and restarted

        await wait_until(worker_is_back, timeout=30, what="the runner to restart worker-1")

        # kill -9 of nginx's master leaves its workers holding the ports; the runner ends
        # them with the master's process group, so the master it starts again can listen.
        master = pid_running(runner.pid, "nginx: master process")
        old_workers = {pid for pid in descendants(master) if alive(pid)}
        assert old_workers
        os.kill(master, signal.SIGKILL)

        async def nginx_is_back() -> bool:
            again = pid_running(runner.pid, "nginx: master process", missing_ok=True)
            if again in (None, master) or any(alive(pid) for pid in old_workers):
                return False
            try:
                async with httpx.AsyncClient(timeout=2.0) as client:
                    ready = await client.get(f"http://127.0.0.1:{http_port}/readyz")
            except httpx.TransportError:
                return False
            return ready.status_code == 200 and again == pid_running(
                runner.pid, "nginx: master process", missing_ok=True
            )

        await wait_until(nginx_is_back, timeout=30, what="a new nginx master serving")

        # kill -9 of pgbouncer: restarted by the runner, and the instances' pools find it
        # again by themselves (their breaker answers 503 meanwhile, never a hang).
        pooler = pid_running(runner.pid, "pgbouncer")
        os.kill(pooler, signal.SIGKILL)

        async def database_reachable_again() -> bool:
            again = pid_running(runner.pid, "pgbouncer", missing_ok=True)
            if again in (None, pooler):
                return False
            async with httpx.AsyncClient(timeout=5.0) as client:
                ready = await client.get(f"http://127.0.0.1:{http_port}/readyz")
                listed = await client.get(f"http://127.0.0.1:{http_port}/v1/products")
            assert ready.status_code in (200, 503), ready.text
            return ready.status_code == 200 and listed.status_code == 200

        await wait_until(database_reachable_again, timeout=30, what="reads through a new pgbouncer")

        started = snapshot(runner.pid)
        # redis, pgbouncer, 2 instances, 1 worker, nginx master + worker
        assert len(started) >= 7, started

        os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the foreground group
        assert runner.wait(timeout=60) == 0
        left = {pid for pid, start in started.items() if alive(pid) and started_at(pid) == start}
        assert left == set(), left
        assert "cluster stopped" in log_path.read_text(errors="replace")
    finally:
        kill_everything(runner, {**seen, **started})


async def test_kill_9_of_the_runner_leaves_no_process_behind(
    database_url: str, run_dir: Path
) -> None:
    """PR_SET_PDEATHSIG is not enough: nginx's workers never had it and pgbouncer, switching
    user as root, lost it. The keeper kills every child's process group once the runner is
    gone, however it went."""
    http_port, https_port = free_port(), free_port()
    runner, log_path = start_runner(
        database_url, run_dir, http_port, https_port,
        "--apis", "1", "--workers", "1", "--live-instances", "0",
    )  # fmt: skip
    started: dict[int, str | None] = {}
    try:
        await wait_serving(runner, log_path, http_port)
        started = snapshot(runner.pid)
        for command in (
            "pgbouncer",
            "redis-server",
            "nginx: worker process",
            " serve ",
            "worker --name",
        ):
            assert pid_running(runner.pid, command)
        os.kill(runner.pid, signal.SIGKILL)  # only the runner: its children are on their own
        assert runner.wait(timeout=10) == -signal.SIGKILL

        def orphans() -> set[int]:
            return {pid for pid, at in started.items() if alive(pid) and started_at(pid) == at}

        async def none_left() -> bool:
            return not orphans()

        try:
            await wait_until(none_left, timeout=15, interval=0.1, what="no child left")
        except (AssertionError, TimeoutError) as exc:
            left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in orphans()}
            raise AssertionError(f"left behind: {left}") from exc
        with pytest.raises(httpx.ConnectError):  # nothing serves the load balancer's port
            httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2.0)
    finally:
        kill_everything(runner, started)


def test_nginx_accepts_the_rendered_and_the_production_configuration(tmp_path: Path) -> None:
    nginx = require_binary("nginx")
    tls = ensure_self_signed(tmp_path / "tls", require_binary("openssl"))
    rendered = render_nginx(
        tmp_path / "local",
        http_port=free_port(),
        https_port=free_port(),
        api_ports=[1, 2, 3],
        tls=tls,
    )
    checked = check_config(nginx, rendered)
    assert checked.returncode == 0, checked.stderr

    # Production's layout: conf.d/shelfwise.conf beside shelfwise/{maps,upstreams,locations}.
    prod = tmp_path / "prod"
    render_nginx(prod, http_port=1, https_port=2, api_ports=[8000], tls=tls)  # the shelfwise/ dir
    (prod / "conf.d").mkdir()
    (prod / "conf.d" / "shelfwise.conf").write_text((DEPLOY_DIR / "shelfwise.conf").read_text())
    main = prod / "nginx.conf"
    main.write_text(
        "pid nginx.pid;\nerror_log logs/error.log;\nevents {}\n"
        "http {\n  client_body_temp_path temp/body;\n  proxy_temp_path temp/proxy;\n"
        "  include conf.d/shelfwise.conf;\n}\n"
    )
    checked = check_config(nginx, main)
    assert checked.returncode == 0, checked.stderr
