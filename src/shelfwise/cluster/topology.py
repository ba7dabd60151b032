"""Which processes make the cluster, on which ports, with which settings.

Pure planning (no process is started here): `build_topology` returns the child specs
(tiers: 0 Redis + pgbouncer, 1 API instances + workers, 2 nginx) and the URLs to reach
them. The API instances and workers get the pooled DSN as DATABASE_URL and the direct one
for session features, Redis for shared state, and trust nginx's X-Forwarded-*.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from shelfwise.cluster.nginx import EdgeLimits, nginx_argv, render_nginx
from shelfwise.cluster.pgbouncer import PoolSizes, pooled_url, render_pgbouncer
from shelfwise.cluster.supervisor import ChildSpec, Probe
from shelfwise.cluster.tls import ensure_self_signed
from shelfwise.db import libpq_url

# How long one readiness probe waits for its answer (a busy 2-core box: seconds).
PROBE_SECONDS = 5.0
# Enough of an answer to find the probe's marker in (headers and the start of the body).
PROBE_READ_LIMIT = 65536


def free_port() -> int:
    (port,) = free_ports(1)
    return port


def free_ports(count: int, *, besides: frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct free ports, none of them in `besides`. Each socket stays bound
    until all are found: a port bound and closed before the next bind may be handed out
    again (it happened: a worker's metrics server took nginx's port)."""
    held: list[socket.socket] = []  # a port in `besides` stays held too: no second time
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            if port not in besides:
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()


@dataclass(frozen=True, slots=True)
class Ports:
    http: int
    https: int
    pgbouncer: int
    redis: int
    api: list[int]
    worker_metrics: list[int]
    live: list[int] = field(default_factory=list)

    @classmethod
    def allocate(
        cls,
        *,
        apis: int,
        workers: int,
        lives: int = 0,
        http: int | None = None,
        https: int | None = None,
    ) -> Ports:
        """The given load-balancer ports; free ones, all distinct, for everything else."""
        given = frozenset(port for port in (http, https) if port)
        fresh = iter(free_ports(4 + apis + workers + lives, besides=given))
        return cls(
            http=http or next(fresh),
            https=https or next(fresh),
            pgbouncer=next(fresh),
            redis=next(fresh),
            api=[next(fresh) for _ in range(apis)],
            worker_metrics=[next(fresh) for _ in range(workers)],
            live=[next(fresh) for _ in range(lives)],
        )


@dataclass(frozen=True)
class TopologyOptions:
    run_dir: Path
    database_url: str  # straight to PostgreSQL
    apis: int = 3
    workers: int = 2
    # Live instances (`serve --role live`, docs/live.md): with any, the API instances run
    # `--role api` and nginx sends the live paths to these; with none, `--role all`.
    lives: int = 0
    redis: bool = True
    pgbouncer: bool = True
    http_port: int | None = None
    https_port: int | None = None
    # Extra settings for every API instance and worker (SHELFWISE_* names).
    app_env: dict[str, str] = field(default_factory=dict)
    worker_env: dict[str, str] = field(default_factory=dict)
    limits: EdgeLimits = field(default_factory=EdgeLimits)
    pool: PoolSizes = field(default_factory=PoolSizes)
    statement_timeout_ms: int = 15_000
    workdir: Path | None = None  # children's cwd (where a `.env` would be read); run_dir if None
    python: str = sys.executable


@dataclass(frozen=True)
class Topology:
    specs: list[ChildSpec]
    ports: Ports
    direct_url: str
    app_url: str  # what the instances use as DATABASE_URL (pgbouncer when on)
    redis_url: str | None
    nginx_conf: Path
    http_url: str
    https_url: str
    api_names: list[str]
    worker_names: list[str]
    live_names: list[str] = field(default_factory=list)

    def api_url(self, name: str) -> str:
        """An API or live instance directly (not through nginx)."""
        if name in self.live_names:
            return f"http://127.0.0.1:{self.ports.live[self.live_names.index(name)]}"
        return f"http://127.0.0.1:{self.ports.api[self.api_names.index(name)]}"


def http_probe(port: int, path: str, *, body_has: bytes) -> Probe:
    """True when GET `path` on 127.0.0.1:`port` answers 200 with `body_has` in its body.
    The body proves who answered: another test's or child's server that took the port
    would answer 200 too (Prometheus's exporter does, on every path), while the child
    meant to listen there failed to bind and is about to exit. Plain asyncio, no HTTP
    client: probes run often, and building a client (its TLS context) blocks the loop
    ~0.5 s."""

    async def answered(reader: asyncio.StreamReader) -> bool:
        status = await reader.readline()
        answer = b""
        while body_has not in answer and len(answer) < PROBE_READ_LIMIT:
            chunk = await reader.read(4096)
            if not chunk:  # HTTP/1.0: the server closes after the body
                break
            answer += chunk
        return b" 200 " in status and body_has in answer

    request = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
    return tcp_probe(port, send=request, answered=answered)


Judge = Callable[[asyncio.StreamReader], Awaitable[bool]]


def first_line_has(expected: bytes) -> Judge:
    """A judge of an answer whose first line must hold `expected` (Redis's `+PONG`)."""

    async def judge(reader: asyncio.StreamReader) -> bool:
        return expected in await reader.readline()

    return judge


def tcp_probe(port: int, *, send: bytes = b"", answered: Judge | None = None) -> Probe:
    """True when 127.0.0.1:`port` accepts a connection and, given `answered`, the answer
    to `send` is right by it."""

    async def probe() -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        try:
            if answered is not None:
                writer.write(send)
                await writer.drain()
                async with asyncio.timeout(PROBE_SECONDS):
                    return await answered(reader)
            return True
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    return probe


def _pgbouncer_user(direct_url: str) -> list[str]:
    """pgbouncer refuses to run as root: as root, switch to the owner of the server's
    socket directory (the embedded server's `pgserver` user), else to `nobody`."""
    if os.geteuid() != 0:
        return []
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(libpq_url(direct_url)).get("host") or "")
    if host.startswith("/") and Path(host).is_dir():
        import pwd

        return ["-u", pwd.getpwuid(Path(host).stat().st_uid).pw_name]
    return ["-u", "nobody"]


def _infrastructure(
    options: TopologyOptions, binaries: dict[str, str], ports: Ports
) -> list[ChildSpec]:
    run = options.run_dir
    specs = []
    if options.redis:
        (run / "redis").mkdir(parents=True, exist_ok=True)
        specs.append(
            ChildSpec(
                name="redis",
                argv=[
                    binaries["redis-server"],
                    "--port",
                    str(ports.redis),
                    "--bind",
                    "127.0.0.1",
                    "--daemonize",  # the default, said out loud: the supervisor
                    "no",  # watches this very process (nginx: `daemon off`)
                    # Browser sessions live here: the append-only file keeps them
                    # through a restart (decision 0030); no RDB snapshots on top.
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    str(run / "redis"),
                ],
                log_path=run / "logs" / "redis.log",
                tier=0,
                probe=tcp_probe(ports.redis, send=b"PING\r\n", answered=first_line_has(b"+PONG")),
            )
        )
    if options.pgbouncer:
        ini = render_pgbouncer(
            run / "pgbouncer",
            options.database_url,
            ports.pgbouncer,
            statement_timeout_ms=options.statement_timeout_ms,
            sizes=options.pool,
        )
        specs.append(
            ChildSpec(
                name="pgbouncer",
                # No `-d`: in the foreground, so the supervisor watches pgbouncer itself.
                argv=[binaries["pgbouncer"], *_pgbouncer_user(options.database_url), str(ini)],
                log_path=run / "logs" / "pgbouncer.log",
                tier=0,
                probe=tcp_probe(ports.pgbouncer),
            )
        )
    return specs


def _app_env(options: TopologyOptions, topology_urls: dict[str, str | None]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(
        {
            "DATABASE_URL": str(topology_urls["app"]),
            "SHELFWISE_DIRECT_DATABASE_URL": str(topology_urls["direct"]),
            "SHELFWISE_DB_TRANSACTION_POOLING": "true" if options.pgbouncer else "false",
            "SHELFWISE_TRUSTED_PROXIES": json.dumps(["127.0.0.1"]),
            "SHELFWISE_DATA_DIR": str(options.run_dir / "data"),
            "SHELFWISE_LOG_JSON": "true",
        }
    )
    if topology_urls["redis"]:
        env["REDIS_URL"] = str(topology_urls["redis"])
    env.update(options.app_env)
    return env


def build_topology(options: TopologyOptions, binaries: dict[str, str]) -> Topology:
    """Render configuration under `options.run_dir` and plan every child process."""
    run = options.run_dir
    run.mkdir(parents=True, exist_ok=True)
    ports = Ports.allocate(
        apis=options.apis,
        workers=options.workers,
        lives=options.lives,
        http=options.http_port,
        https=options.https_port,
    )
    direct = libpq_url(options.database_url)
    urls: dict[str, str | None] = {
        "direct": direct,
        "app": pooled_url(direct, ports.pgbouncer) if options.pgbouncer else direct,
        "redis": f"redis://127.0.0.1:{ports.redis}/0" if options.redis else None,
    }
    specs = _infrastructure(options, binaries, ports)
    env = _app_env(options, urls)
    cli = [options.python, "-m", "shelfwise.cli"]
    cwd = options.workdir or run
    api_names = [f"api-{n}" for n in range(1, options.apis + 1)]
    live_names = [f"live-{n}" for n in range(1, options.lives + 1)]
    api_role = "api" if options.lives else "all"
    instances = [(name, port, api_role) for name, port in zip(api_names, ports.api, strict=True)]
    instances += [(name, port, "live") for name, port in zip(live_names, ports.live, strict=True)]
    for name, port, role in instances:
        specs.append(
            ChildSpec(
                name=name,
                argv=[*cli, "serve", "--host", "127.0.0.1", "--port", str(port), "--role", role],
                env={**env, "SHELFWISE_INSTANCE_ID": name},
                cwd=cwd,
                log_path=run / "logs" / f"{name}.log",
                # uvicorn drains for up to 10 s (cli._serve), then the lifespan ends.
                stop_timeout=20.0,
                probe=http_probe(port, "/readyz", body_has=b'"status":"ready"'),
            )
        )
    worker_names = [f"worker-{n}" for n in range(1, options.workers + 1)]
    for name, port in zip(worker_names, ports.worker_metrics, strict=True):
        specs.append(
            ChildSpec(
                name=name,
                argv=[*cli, "worker", "--name", name, "--metrics-port", str(port)],
                env={**env, "SHELFWISE_INSTANCE_ID": name, **options.worker_env},
                cwd=cwd,
                log_path=run / "logs" / f"{name}.log",
                stop_timeout=30.0,  # worker_shutdown_timeout_seconds (20) + margin
                probe=http_probe(port, "/metrics", body_has=b"shelfwise_"),
            )
        )
    tls = ensure_self_signed(run / "tls", binaries["openssl"])
    conf = render_nginx(
        run / "nginx",
        http_port=ports.http,
        https_port=ports.https,
        api_ports=ports.api,
        live_ports=ports.live or ports.api,  # no live instances: the API ones serve streams
        tls=tls,
        limits=options.limits,
    )
    if options.apis:
        specs.append(
            ChildSpec(
                name="nginx",
                argv=nginx_argv(binaries["nginx"], conf),
                log_path=run / "logs" / "nginx.log",
                tier=2,
                stop_signal=signal.SIGQUIT,  # graceful: finish requests in flight
                stop_timeout=10.0,
                probe=http_probe(ports.http, "/healthz", body_has=b'"status":"ok"'),
            )
        )
    return Topology(
        specs=specs,
        ports=ports,
        direct_url=direct,
        app_url=str(urls["app"]),
        redis_url=urls["redis"],
        nginx_conf=conf,
        http_url=f"http://127.0.0.1:{ports.http}",
        https_url=f"https://127.0.0.1:{ports.https}",
        api_names=api_names,
        worker_names=worker_names,
        live_names=live_names,
    )


def required_binaries(options: TopologyOptions) -> list[str]:
    names = ["openssl"]
    if options.apis:
        names.append("nginx")
    if options.redis:
        names.append("redis-server")
    if options.pgbouncer:
        names.append("pgbouncer")
    return names
