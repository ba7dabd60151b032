"""The topology's settings and rendered configuration, without starting anything."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from shelfwise.cluster.binaries import MissingBinaryError
from shelfwise.cluster.nginx import DEPLOY_DIR, upstream_servers
from shelfwise.cluster.pgbouncer import pooled_url, render_pgbouncer
from shelfwise.cluster.topology import Ports, free_ports, http_probe
from shelfwise.config import Environment, Settings
from shelfwise.db import connect_args

UPSTREAM = "postgresql://shop:s3cret@db.internal:5433/shelfwise"


def settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, env=Environment.TEST, **overrides)  # type: ignore[arg-type]


def test_pooling_without_a_direct_dsn_is_refused() -> None:
    with pytest.raises(ValidationError, match="SHELFWISE_DIRECT_DATABASE_URL"):
        settings(database_url=UPSTREAM, db_transaction_pooling=True)


def test_session_features_use_the_direct_dsn_and_fall_back_to_the_main_one() -> None:
    pooled = settings(
        database_url="postgresql://shop@127.0.0.1:6432/shelfwise",
        direct_database_url=UPSTREAM,
        db_transaction_pooling=True,
    )
    assert pooled.direct_url("postgresql://shop@127.0.0.1:6432/shelfwise") == UPSTREAM
    assert settings().direct_url(UPSTREAM) == UPSTREAM


def test_no_prepared_statements_or_startup_options_through_pgbouncer() -> None:
    pooled = settings(direct_database_url=UPSTREAM, db_transaction_pooling=True)
    assert connect_args(pooled, "shelfwise") == {
        "application_name": "shelfwise",
        "prepare_threshold": None,
    }
    direct = connect_args(settings(db_statement_timeout_ms=1234), "shelfwise")
    assert direct["options"] == "-c statement_timeout=1234"
    assert "prepare_threshold" not in direct


def test_instance_name_is_the_setting_or_host_and_pid() -> None:
    assert settings(instance_id="api-2").instance_name == "api-2"
    assert settings().instance_name.endswith(f"-{__import__('os').getpid()}")


def test_pgbouncer_pools_transactions_and_sets_the_statement_timeout(tmp_path: Path) -> None:
    ini = render_pgbouncer(tmp_path, UPSTREAM, 6499, statement_timeout_ms=15000).read_text()
    assert "pool_mode = transaction" in ini
    assert "listen_addr = 127.0.0.1" in ini
    assert "listen_port = 6499" in ini
    assert (
        "* = host='db.internal' port='5433' user='shop' password='s3cret'"
        " connect_query='SET statement_timeout = 15000'" in ini
    )
    assert pooled_url(UPSTREAM, 6499) == "postgresql://shop@127.0.0.1:6499/shelfwise"


def test_upstream_template_has_one_server_per_instance() -> None:
    template = (DEPLOY_DIR / "upstreams.conf").read_text()
    rendered = template.replace("@SERVERS@", upstream_servers([8001, 8002, 8003]))
    rendered = rendered.replace("@LIVE_SERVERS@", upstream_servers([8101, 8102]))
    assert rendered.count("    server 127.0.0.1:80") == 3
    assert rendered.count("    server 127.0.0.1:81") == 2  # upstream shelfwise_live
    assert "least_conn;" in rendered
    assert "@" not in rendered


def test_live_paths_go_to_the_live_upstream_and_nothing_else_does() -> None:
    locations = (DEPLOY_DIR / "locations.conf").read_text()
    blocks = re.findall(r"^location .*?^}", locations, flags=re.MULTILINE | re.DOTALL)
    live = [block for block in blocks if "/v1/ws" in block or "stream|poll" in block]
    assert len(live) == 2
    assert all("proxy_pass http://shelfwise_live;" in block for block in live)
    others = [block for block in blocks if block not in live]
    assert all("shelfwise_live" not in block for block in others)


def test_a_missing_program_names_its_package() -> None:
    error = MissingBinaryError(["redis-server", "nginx"])
    assert "apt-get install -y nginx redis-server" in str(error)


def test_the_ports_of_a_cluster_are_distinct_and_avoid_the_given_ones() -> None:
    given = free_ports(2)
    for _ in range(50):  # one at a time, bound and closed, the kernel repeated ports
        ports = Ports.allocate(apis=3, workers=2, lives=2, http=given[0], https=given[1])
        fresh = [ports.pgbouncer, ports.redis, *ports.api, *ports.worker_metrics, *ports.live]
        assert len(set(fresh)) == len(fresh) == 9
        assert not set(fresh) & set(given)
        assert (ports.http, ports.https) == (given[0], given[1])


async def test_a_probe_is_not_fooled_by_another_server_on_the_port() -> None:
    """Prometheus's exporter answers 200 on every path: a child that failed to bind its
    port must not look ready because that server answers there."""

    def answering(body: bytes) -> Callable[..., Awaitable[None]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        return answer

    exporter = await asyncio.start_server(answering(b"# HELP python_gc_objects\n"), "127.0.0.1")
    ours = await asyncio.start_server(answering(b'{"status":"ok"}'), "127.0.0.1")
    async with exporter, ours:
        for server, ready in ((exporter, False), (ours, True)):
            port = server.sockets[0].getsockname()[1]
            assert await http_probe(port, "/healthz", body_has=b'"status":"ok"')() is ready
