"""The benchmark's own database and the two servers under test, as child processes.

The database is an embedded cluster under `var/bench` — never the development (`var/pg`)
or test (`var/test`) one — migrated and seeded like production data. Each server runs in
its own process, exactly as deployed (`shelfwise serve`: uvicorn, uvloop, httptools, one
worker), so the figures include the real middleware stack, logging and settings.

A benchmark that must not inherit what earlier runs left in a shared database copies a
seeded template instead (`seeded_template`, `database_copy`): the template is built once
per schema and seed version, and `CREATE DATABASE … TEMPLATE` copies its 33 MB in ~0.1 s
where seeding afresh takes ~6 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "var" / "bench"
# Every process a benchmark starts runs on the harness's own environment: the
# interpreter measured is the one the harness was started with (`make bench` builds
# .venv-bench with BENCH_PYTHON, an optimized CPython like the image's: decision 0050).
BIN = Path(sys.executable).parent
DATABASE = "shelfwise_bench"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def interpreter() -> dict[str, str]:
    """The CPython every process of the run executes (BIN's), for the result: a build
    without PGO/LTO cost Shelfwise ~30 % more CPU per order here (decision 0050)."""
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "build": " ".join(platform.python_build()),
        "compiler": platform.python_compiler(),
    }


def prepare_database(products: int, database: str = DATABASE) -> tuple[str, list[str]]:
    """Start the embedded cluster, migrate, seed; return its URL and the product ids.

    Seeding is idempotent, so a second run reuses the rows of the first. The cluster stops
    when this process exits (pgserver's `cleanup_mode="stop"`)."""
    import psycopg

    from shelfwise.config import load_settings
    from shelfwise.db import open_database
    from shelfwise.embedded import start_embedded
    from shelfwise.migrate import upgrade
    from shelfwise.seed import seed_catalog

    url = start_embedded(DATA_DIR, database=database)
    upgrade(url)

    async def seed() -> None:
        db = open_database(load_settings(database_url=url), url)
        try:
            async with db.sessions() as session:
                await seed_catalog(session, products=products)
        finally:
            await db.dispose()

    asyncio.run(seed())
    # Fresh planner statistics and visibility map, as a long-lived database would have.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE products")
    return url, product_ids(url, products)


def product_ids(url: str, products: int) -> list[str]:
    """The ids of the first `products` products, in the order they were seeded."""
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id FROM products ORDER BY created_at, id LIMIT %s", (products,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def location_id(url: str, code: str = "WH-NORTH") -> str:
    """The id of the seeded location the benchmarks stock and order from."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT id FROM locations WHERE code = %s", (code,)).fetchone()
    assert row is not None, f"the seed has no {code} location"
    return str(row[0])


def seed_demo(url: str) -> None:
    """The demo seed (users, locations; no products) as `shelfwise seed` writes it."""
    subprocess.run(
        [str(BIN / "shelfwise"), "seed", "--products", "0"],
        cwd=ROOT,
        check=True,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
    )


def prepare_seeded(products: int, database: str = DATABASE) -> tuple[str, list[str], str]:
    """`prepare_database`, then the demo seed (users, locations; no more products) as
    `shelfwise seed` writes it; return the URL, the product ids and the id of the
    `WH-NORTH` location the benchmarks stock and order from."""
    url, ids = prepare_database(products, database)
    seed_demo(url)
    return url, ids, location_id(url)


# The template's name carries a digest of what its rows come from, so a new migration or
# a changed seed builds a new template instead of copying a stale one.
TEMPLATE_PREFIX = "shelfwise_bench_template_"
TEMPLATE_INPUTS = (ROOT / "migrations" / "versions", ROOT / "migrations" / "sql")
TEMPLATES_KEPT = 3  # the newest; 33 MB each


def template_name(products: int) -> str:
    digest = hashlib.sha256(str(products).encode())
    files = [ROOT / "src" / "shelfwise" / "seed.py"]
    for folder in TEMPLATE_INPUTS:
        files += sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".pyc")
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return TEMPLATE_PREFIX + digest.hexdigest()[:12]


def seeded_template(products: int) -> tuple[str, list[str], str, bool]:
    """The seeded template database (`prepare_seeded`'s rows, VACUUM ANALYZEd): its URL,
    product ids, the `WH-NORTH` location and whether this call built it.

    Built under a temporary name and renamed when complete, so a run killed while seeding
    leaves no template that looks finished; all but the newest `TEMPLATES_KEPT` templates
    are dropped.
    Nothing but these reads and `CREATE DATABASE … TEMPLATE` may connect to it: a copy
    fails while another session is connected, and a write would change every later copy."""
    from shelfwise.embedded import start_embedded

    name = template_name(products)
    admin = start_embedded(DATA_DIR, database="postgres")
    built = name not in databases(admin, TEMPLATE_PREFIX)
    if built:
        building = name + "_building"
        drop_database(admin, building)
        url, _, _ = prepare_seeded(products, building)
        with psycopg_autocommit(url) as conn:
            conn.execute("VACUUM ANALYZE")
        with psycopg_autocommit(admin) as conn:
            conn.execute(_sql("ALTER DATABASE {} RENAME TO {}", building, name))
        # Older versions go, but not the last few: another checkout of the repository
        # (a helper's tree, an A/B base) on this cluster may be copying one right now.
        for stale in databases(admin, TEMPLATE_PREFIX)[:-TEMPLATES_KEPT]:
            drop_database(admin, stale)
    url = database_url(admin, name)
    return url, product_ids(url, products), location_id(url), built


def database_url(url: str, database: str) -> str:
    """`url` with another database of the same cluster."""
    from sqlalchemy.engine import make_url

    from shelfwise.db import libpq_url

    return make_url(libpq_url(url)).set(database=database).render_as_string(hide_password=False)


def databases(url: str, prefix: str) -> list[str]:
    """The cluster's databases whose name starts with `prefix`, oldest first."""
    with psycopg_autocommit(url) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY oid",
            (prefix,),
        ).fetchall()
    return [str(row[0]) for row in rows]


def scratch_database(server: str, prefix: str) -> tuple[str, str]:
    """A new database of `server`'s cluster named `prefix` + a random suffix, migrated:
    its name and URL (drop it with `drop_database`; dropped here if migrating fails)."""
    import uuid

    from shelfwise.migrate import upgrade

    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    with psycopg_autocommit(server) as conn:
        conn.execute(_sql("CREATE DATABASE {}", name))
    url = database_url(server, name)
    try:
        upgrade(url)
    except BaseException:
        drop_database(server, name)
        raise
    return name, url


def drop_database(server: str, name: str) -> None:
    """Drop `name` from `server`'s cluster (any database URL of it), its sessions too."""
    with psycopg_autocommit(server) as conn:
        conn.execute(_sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", name))


@contextmanager
def database_copy(template_url: str, name: str) -> Iterator[str]:
    """A copy of the template database named `name`, VACUUM ANALYZEd and with the
    cluster's dirty buffers written out (CHECKPOINT), so what runs on it first does not
    pay for what ran before; dropped on the way out, whatever the exit."""
    from sqlalchemy.engine import make_url

    admin = database_url(template_url, "postgres")
    source = str(make_url(template_url).database)
    with psycopg_autocommit(admin) as conn:
        conn.execute(_sql("CREATE DATABASE {} TEMPLATE {}", name, source))
    try:
        url = database_url(template_url, name)
        with psycopg_autocommit(url) as conn:
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
        yield url
    finally:
        drop_database(admin, name)


def row_counts(url: str) -> dict[str, int]:
    """The rows an order step's cost may depend on: catalog, levels, orders, ledger and
    outbox (published or not)."""
    with psycopg_autocommit(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM stock_levels),"
            " (SELECT count(*) FROM orders), (SELECT count(*) FROM stock_movements),"
            " (SELECT count(*) FROM outbox_events),"
            " (SELECT count(*) FROM outbox_events WHERE position IS NULL)"
        ).fetchone()
    assert row is not None
    keys = ("products", "stock_levels", "orders", "stock_movements", "outbox_events")
    return {**dict(zip(keys, row[:5], strict=True)), "outbox_unpublished": row[5]}


@contextmanager
def psycopg_autocommit(url: str) -> Iterator[Any]:
    import psycopg

    from shelfwise.db import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        yield conn


def _sql(template: str, *names: str) -> Any:
    from psycopg import sql

    return sql.SQL(template).format(*(sql.Identifier(n) for n in names))


# An order step takes ~2 units per level (20k one-line orders over 10,000 levels); a
# level with less than this left is left out of the step rather than answered 409.
ORDERABLE_MARGIN = 10


def release_expired_reservations(url: str, location: str) -> dict[str, int]:
    """Expire the reservations whose time is up, as the worker's periodic task would.

    No worker runs on the bench database, so every order step's reservations stay held
    until something expires them: without this, stock runs out over a session of runs,
    refusals (409, each with a round trip of its own) creep into the step and skew its CPU
    per order. Returns how many orders were expired, then how many of `location`'s levels
    are sold out and how many have less than `ORDERABLE_MARGIN` units available."""
    import psycopg

    from shelfwise.clock import SystemClock
    from shelfwise.config import load_settings
    from shelfwise.db import open_database
    from shelfwise.orders.expiry import expire_reservations

    async def expire() -> int:
        db = open_database(load_settings(database_url=url), url)
        try:
            async with db.sessions() as session:
                return await expire_reservations(session, now=SystemClock().now())
        finally:
            await db.dispose()

    expired = asyncio.run(expire())
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE on_hand - reserved <= 0),"
            " count(*) FILTER (WHERE on_hand - reserved < %s)"
            " FROM stock_levels WHERE location_id = %s",
            (ORDERABLE_MARGIN, location),
        ).fetchone()
    assert row is not None
    return {"expired_orders": expired, "sold_out_levels": row[0], "low_levels": row[1]}


def orderable_products(url: str, ids: list[str], location: str) -> list[str]:
    """`ids` without the products whose level at `location` has less than
    `ORDERABLE_MARGIN` units available (reserved by runs of the last reservation TTL),
    so that an order step measures placements, not refusals."""
    import psycopg

    with psycopg.connect(url) as conn:
        low = {
            str(row[0])
            for row in conn.execute(
                "SELECT product_id FROM stock_levels"
                " WHERE location_id = %s AND on_hand - reserved < %s",
                (location, ORDERABLE_MARGIN),
            )
        }
    return [product for product in ids if product not in low]


def cluster_cpu_seconds() -> float:
    """CPU time used so far by the benchmark cluster's postmaster and its backends.

    Only this cluster's: other embedded clusters (tests, development) may be running."""
    marker = str(DATA_DIR / "pg")
    total = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if (proc.info["name"] or "").startswith("postgres") and marker in " ".join(
                proc.info["cmdline"] or []
            ):
                for p in [proc, *proc.children(recursive=True)]:
                    times = p.cpu_times()
                    total += times.user + times.system
        except psutil.Error:
            continue
    return total


def database_cpu_seconds(database: str) -> float:
    """CPU time of one database's live backends (and autovacuum workers on it):
    PostgreSQL puts the database name in each backend's process title, so other
    benchmarks sharing the cluster are not counted."""
    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if database in " ".join(proc.info["cmdline"] or []):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(slots=True)
class Usage:
    """Resident memory of a server's process tree: first sample (idle, just started),
    peak over all samples (every 0.2 s, under load) and last."""

    idle_rss: int = 0
    peak_rss: int = 0
    last_rss: int = 0


@dataclass
class Server:
    """A server under test: its process, its log file and a background RSS sampler."""

    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    usage: Usage = field(default_factory=Usage)
    _log: IO[bytes] | None = None
    _stop_sampling: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        # stdout and stderr both go to the file: the access log must not slow a terminal.
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str = "/readyz", timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll `path` until it answers 200; fail early if the process dies."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}); see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:
                    if response.status == 200:
                        self._start_sampling()
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f}s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server's process tree has used so far (with
        `--workers N` the requests are served by uvicorn's child processes)."""
        assert self.process is not None
        proc = psutil.Process(self.process.pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                times = p.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def _rss(self) -> int:
        assert self.process is not None
        proc = psutil.Process(self.process.pid)
        return int(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))

    def _start_sampling(self) -> None:
        def sample() -> None:
            while not self._stop_sampling.wait(0.2):
                try:
                    rss = self._rss()
                except psutil.Error:
                    return
                self.usage.idle_rss = self.usage.idle_rss or rss
                self.usage.last_rss = rss
                self.usage.peak_rss = max(self.usage.peak_rss, rss)

        self._sampler = threading.Thread(target=sample, name=f"rss-{self.name}", daemon=True)
        self._sampler.start()

    def stop(self) -> None:
        """Terminate (SIGTERM, then SIGKILL after a grace period). Safe to call twice."""
        self._stop_sampling.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)
        if self._sampler is not None:
            self._sampler.join(1.0)
        if self._log is not None:
            self._log.close()
            self._log = None


def shelfwise_server(
    database_url: str,
    port: int,
    log_path: Path,
    *,
    log_json: bool,
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Server:
    argv = [str(BIN / "shelfwise"), "serve", "--port", str(port)]
    return Server(
        name="shelfwise",
        argv=argv + (["--workers", str(workers)] if workers > 1 else []),
        env={
            "DATABASE_URL": database_url,
            "SHELFWISE_ENV": "development",
            "SHELFWISE_ACCESS_LOG": "true",
            "SHELFWISE_LOG_JSON": "true" if log_json else "false",
            **(extra_env or {}),
        },
        port=port,
        log_path=log_path,
    )


def baseline_server(database_url: str, port: int, log_path: Path, workers: int = 1) -> Server:
    return _bench_app("baseline", database_url, port, log_path, workers)


def samework_server(database_url: str, port: int, log_path: Path, workers: int = 1) -> Server:
    """The same-work baseline (bench/samework.py): Shelfwise's statements, no stack."""
    return _bench_app("samework", database_url, port, log_path, workers)


def _bench_app(module: str, database_url: str, port: int, log_path: Path, workers: int) -> Server:
    python = str(BIN / "python")
    return Server(
        name=module,
        argv=[python, "-m", f"bench.{module}", "--port", str(port), "--workers", str(workers)],
        env={"BENCH_DATABASE_URL": database_url},
        port=port,
        log_path=log_path,
    )
