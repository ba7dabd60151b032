"""compose.yaml and what it mounts, checked without a Docker daemon (docs/deploy.md,
"Compose"): every service has a health check and starts in order, no secret value is in
the file, `make-secrets.sh` makes every secret it mounts (good enough for production
settings, and Redis really runs on them), `nginx -t` accepts deploy/nginx/ with compose's
own upstream file, and Prometheus discovers every replica.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError

from shelfwise.config import Settings
from tests.redis_support import free_port, wait_for_redis
from tests.support import require_binary

REPO = Path(__file__).resolve().parents[2]
COMPOSE_SERVICES = frozenset(
    [
        "postgres",
        "pgbouncer",
        "redis",
        "rabbitmq",
        "migrate",
        "api",
        "live",
        "worker",
        "nginx",
        "prometheus",
        "grafana",
    ]
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())
    return loaded


def test_compose_services_have_health_checks_and_start_in_order(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    assert set(services) >= COMPOSE_SERVICES
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name == "migrate":
            # One-shot: it exits, so it is "completed", never "healthy" (compose.yaml).
            assert check == {"disable": True}
            continue
        assert check.get("test"), f"{name} has no health check"
        for dependency, rule in service.get("depends_on", {}).items():
            done = dependency == "migrate"
            wanted = "service_completed_successfully" if done else "service_healthy"
            assert rule["condition"] == wanted, (name, dependency)
    assert services["api"]["deploy"]["replicas"] == 3
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["command"] == ["serve", "--role", "api"]
    assert services["live"]["command"] == ["serve", "--role", "live"]
    for name in ("api", "live", "worker"):
        assert "migrate" in services[name]["depends_on"]
    worker_env = services["worker"]["environment"]
    metrics = f"http://127.0.0.1:{worker_env['SHELFWISE_WORKER_METRICS_PORT']}/metrics"
    assert worker_env["SHELFWISE_HEALTHCHECK_URL"] == metrics
    assert services["rabbitmq"]["profiles"] == ["broker"]
    assert services["worker"]["depends_on"]["rabbitmq"]["required"] is False
    # Redis keeps sessions on a volume (its append-only file: the redis test below).
    assert "redis:/data" in services["redis"]["volumes"]
    assert "redis" in compose["volumes"]


CREDENTIALS_IN_URL = re.compile(r"://[^/@\s:]*:[^/@\s]+@")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE", re.I)


def test_compose_holds_no_secret_value(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), name
        for key, value in environment.items():
            assert not CREDENTIALS_IN_URL.search(str(value)), (name, key)
            if SECRET_NAME.search(key):
                # Only a pointer to a secret file (POSTGRES_PASSWORD_FILE, ..._PASSWORD__FILE).
                assert key.endswith("_FILE"), (name, key)
                assert str(value).startswith("/run/secrets/"), (name, key)
        for arg in service.get("command", []):
            assert not CREDENTIALS_IN_URL.search(arg), name
            assert "requirepass" not in arg, name
            assert "--password" not in arg, name
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, name
        assert secret["file"].startswith("./var/secrets/"), name
    assert "var/" in (REPO / ".gitignore").read_text().splitlines()


def test_make_secrets_makes_every_compose_secret_fit_for_production(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    require_binary("openssl")
    directory = Path(tempfile.mkdtemp(prefix="shelfwise-secrets-"))
    try:
        script = REPO / "deploy" / "compose" / "make-secrets.sh"
        env = {"PATH": "/usr/bin:/bin", "SHELFWISE_SECRETS_DIR": str(directory)}
        subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True)
        for name, secret in compose["secrets"].items():
            assert (directory / Path(secret["file"]).name).exists(), name
        password = (directory / "postgres_password").read_text()
        assert len(password) >= 32
        assert f":{password}@pgbouncer:6432/" in (directory / "database_url").read_text()
        assert f'"shelfwise" "{password}"' == (directory / "pgbouncer_userlist").read_text()
        assert (directory / "shelfwise_broker_url").read_text() == ""

        # A second run keeps every password and turns the broker on when asked.
        subprocess.run(["sh", str(script), "--broker"], env=env, check=True, capture_output=True)
        assert (directory / "postgres_password").read_text() == password
        assert (directory / "shelfwise_broker_url").read_text().startswith("amqp://shelfwise:")

        # What the API containers mount is enough for production settings.
        for variable in ("DATABASE_URL", "REDIS_URL", "SHELFWISE_ENV"):
            monkeypatch.delenv(variable, raising=False)
        for field in ("jwt_secret", "cursor_secret", "session_secret", "direct_database_url"):
            monkeypatch.delenv(f"SHELFWISE_{field.upper()}", raising=False)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, _secrets_dir=str(directory), env="production"
        )
        assert settings.database_url == (directory / "database_url").read_text()
        jwt = settings.jwt_secret.get_secret_value()
        assert jwt == (directory / "shelfwise_jwt_secret").read_text()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _running(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A server process for the block, terminated (then killed) afterwards."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.mark.e2e
async def test_compose_redis_runs_on_the_generated_config_and_password(
    compose: dict[str, Any],
) -> None:
    """redis.conf from make-secrets.sh on a real redis-server: a client without the
    password is refused, compose's health check command and the `redis_url` secret get in,
    and what was written is still there after a kill -9 and a start on the same volume."""
    redis_server = require_binary("redis-server")
    require_binary("redis-cli")
    require_binary("openssl")
    directory = Path(tempfile.mkdtemp(prefix="shelfwise-compose-redis-"))
    try:
        secrets = directory / "secrets"
        env = {"PATH": "/usr/bin:/bin", "SHELFWISE_SECRETS_DIR": str(secrets)}
        script = REPO / "deploy" / "compose" / "make-secrets.sh"
        subprocess.run(["sh", str(script)], env=env, check=True, capture_output=True)
        port = free_port()
        argv = [redis_server, str(secrets / "redis.conf"), "--port", str(port)]
        with _running([*argv, "--bind", "127.0.0.1", "--dir", str(directory)]) as process:
            secret_url = (secrets / "redis_url").read_text()
            client = Redis.from_url(secret_url.replace("@redis:6379/", f"@127.0.0.1:{port}/"))
            stranger = Redis.from_url(f"redis://127.0.0.1:{port}/0")
            try:
                await wait_for_redis(process, client, what="redis-server with the password")
                with pytest.raises(AuthenticationError):
                    await stranger.ping()
            finally:
                await client.aclose()
                await stranger.aclose()
            # The compose health check, pointed at this server and these files.
            kind, check = compose["services"]["redis"]["healthcheck"]["test"]
            assert kind == "CMD-SHELL"
            command = (
                check.replace("$$", "$")
                .replace("/run/secrets/", f"{secrets}/")
                .replace("redis-cli ping", f"redis-cli -p {port} ping")
            )
            done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, check=False)
            assert done.returncode == 0, done.stderr
            # Sessions outlive the server: the write is in the append-only file once
            # acknowledged, so even a kill -9 (no shutdown save) keeps it.
            client = Redis.from_url(secret_url.replace("@redis:6379/", f"@127.0.0.1:{port}/"))
            try:
                await client.set("session:kept", "yes")
            finally:
                await client.aclose()
            process.kill()
            process.wait(timeout=5)
        with _running([*argv, "--bind", "127.0.0.1", "--dir", str(directory)]) as process:
            client = Redis.from_url(secret_url.replace("@redis:6379/", f"@127.0.0.1:{port}/"))
            try:
                await wait_for_redis(process, client, what="redis-server after kill -9")
                assert await client.get("session:kept") == b"yes"
            finally:
                await client.aclose()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_nginx_accepts_deploy_nginx_with_the_compose_upstreams(compose: dict[str, Any]) -> None:
    """The layout compose mounts into the nginx image, checked with `nginx -t`. Only the
    service name is replaced (by 127.0.0.1): nginx resolves upstream names when it loads,
    and `api` and `live` exist only in Docker's DNS."""
    nginx = require_binary("nginx")
    openssl = require_binary("openssl")
    root = Path(tempfile.mkdtemp(prefix="shelfwise-compose-nginx-"))
    try:
        for mount in compose["services"]["nginx"]["volumes"]:
            source, target, _ = mount.split(":")
            destination = root / Path(target).relative_to("/etc/nginx")
            destination.parent.mkdir(parents=True, exist_ok=True)
            text = (REPO / source).read_text()
            if source.endswith("compose/nginx/upstreams.conf"):
                text = re.sub(r"server (api|live):", "server 127.0.0.1:", text)
            destination.write_text(text)
        tls = root / "shelfwise" / "tls"
        tls.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=localhost", "-keyout", str(tls / "tls.key"),
             "-out", str(tls / "tls.crt")],
            check=True, capture_output=True,
        )  # fmt: skip
        # What the image's own nginx.conf does: conf.d/*.conf inside http {}.
        (root / "nginx.conf").write_text(
            f"pid {root}/nginx.pid;\nevents {{}}\n"
            f"http {{\n  client_body_temp_path {root}/tmp;\n  include conf.d/*.conf;\n}}\n"
        )
        done = subprocess.run(
            [nginx, "-t", "-e", "stderr", "-p", str(root), "-c", "nginx.conf"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "test is successful" in done.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_prometheus_scrapes_every_replica_of_every_shelfwise_service(
    compose: dict[str, Any],
) -> None:
    promtool = require_binary("promtool")
    config_path = REPO / "deploy" / "prometheus" / "prometheus.yml"
    done = subprocess.run(
        [promtool, "check", "config", str(config_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(config_path.read_text())
    # One target per container: DNS discovery, never a static name that resolves to one.
    discovered = {
        name
        for job in config["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    }
    shelfwise = {
        name
        for name, service in compose["services"].items()
        if service.get("image", "").startswith("${SHELFWISE_IMAGE") and name != "migrate"
    }
    assert shelfwise == {"api", "live", "worker"}
    assert discovered == shelfwise
