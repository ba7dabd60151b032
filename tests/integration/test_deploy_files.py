"""The container and Kubernetes files, checked statically: no Docker daemon or cluster can
run here (docs/deploy.md, "Containers", "Compose", "Kubernetes").

- both kustomize overlays render, and every object passes strict schema validation for a
  pinned Kubernetes version (kubernetes-validate's bundled schemas: no network);
- the manifests keep the promises the docs make (rolling update without lost capacity,
  probes, drain, security context, the live role, secrets only as files);
- the Dockerfile passes hadolint; compose.yaml gives every service a health check and
  holds no secret value; make-secrets.sh makes every secret compose mounts, and they are
  good enough for production settings;
- `nginx -t` accepts deploy/nginx/ with compose's own upstream file;
- every command a container runs is one the `shelfwise` CLI accepts.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from typer.testing import CliRunner

from shelfwise.cli import app as cli_app
from shelfwise.config import Settings
from shelfwise.live.roles import LIVE_PATHS
from shelfwise.observability.metrics import LIVE_CONNECTIONS
from tests.redis_support import free_port
from tests.support import require_binary, wait_until

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# The Kubernetes version the manifests must be valid for (the kubectl client here).
KUBERNETES_VERSION = "1.32.0"
# uvicorn's graceful drain in `shelfwise serve` (cli.py: timeout_graceful_shutdown).
SERVE_DRAIN_SECONDS = 10
K8S_KINDS = frozenset(
    [
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Job",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ]
)
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

Manifest = dict[str, Any]


def _render(path: Path) -> list[Manifest]:
    kubectl = require_binary("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _pod_specs(docs: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


@pytest.fixture(scope="module", params=["dev", "prod"])
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name: str = request.param
    return name, _render(K8S / "overlays" / name)


# --- Kubernetes -------------------------------------------------------------------------


def test_overlay_renders_and_every_object_passes_strict_schema_validation(
    overlay: tuple[str, list[Manifest]],
) -> None:
    name, docs = overlay
    for doc in docs:
        # Raises on a schema violation and on a kind it has no schema for (a CRD in base).
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    kinds = {d["kind"] for d in docs}
    assert kinds >= K8S_KINDS
    # Secrets are referenced, never committed.
    assert "Secret" not in kinds
    assert {d["metadata"]["namespace"] for d in docs if d["kind"] != "Namespace"} == {
        "shelfwise-dev" if name == "dev" else "shelfwise"
    }


def test_strict_schema_validation_is_not_vacuous() -> None:
    misspelt = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 3,  # not a field
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)


def test_api_and_live_pods_roll_drain_and_probe_as_documented(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    for name in ("shelfwise-api", "shelfwise-live"):
        deployment = _one(docs, "Deployment", name)
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        # SIGKILL must never cut the drain short.
        assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + SERVE_DRAIN_SECONDS
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["limits"]["memory"]
        spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert spread == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    api = _one(docs, "Deployment", "shelfwise-api")["spec"]["template"]["spec"]
    live = _one(docs, "Deployment", "shelfwise-live")["spec"]["template"]["spec"]
    assert api["containers"][0]["args"] == ["serve", "--role", "api"]
    assert live["containers"][0]["args"] == ["serve", "--role", "live"]


def test_every_pod_runs_locked_down_with_secrets_only_as_files(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    for where, pod in _pod_specs(docs):
        assert pod["automountServiceAccountToken"] is False, where
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, where
        assert security["runAsUser"] != 0, where
        assert security["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in pod["containers"]:
            locked = container["securityContext"]
            assert locked["readOnlyRootFilesystem"] is True, where
            assert locked["allowPrivilegeEscalation"] is False, where
            assert locked["capabilities"]["drop"] == ["ALL"], where
            # No secret through the environment: literal values are plain settings, and
            # nothing comes from a Secret by env.
            for env in container.get("env", []):
                assert "secretKeyRef" not in env.get("valueFrom", {}), (where, env["name"])
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/run/secrets"} <= mounts, where
        secret_volumes = [v["secret"] for v in pod["volumes"] if "secret" in v]
        assert [v["secretName"] for v in secret_volumes] == ["shelfwise-secrets"], where


def test_worker_liveness_is_its_metrics_port_and_its_grace_covers_the_job_drain(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    pod = _one(docs, "Deployment", "shelfwise-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["worker"]
    probe = container["livenessProbe"]["httpGet"]
    port = next(p for p in container["ports"] if p["name"] == probe["port"])
    assert str(port["containerPort"]) == config["SHELFWISE_WORKER_METRICS_PORT"]
    assert probe["path"] == "/metrics"
    drain = Settings(_env_file=None).worker_shutdown_timeout_seconds  # type: ignore[call-arg]
    assert pod["terminationGracePeriodSeconds"] > drain


def test_migrations_run_as_a_job_on_the_direct_dsn(overlay: tuple[str, list[Manifest]]) -> None:
    _, docs = overlay
    job = _one(docs, "Job", "shelfwise-migrate")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["migrate"]
    (secrets,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
    paths = {item["key"]: item["path"] for item in secrets["items"]}
    assert paths["shelfwise_direct_database_url"] == "database_url"
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"


def test_live_paths_go_to_the_live_pods_unbuffered(overlay: tuple[str, list[Manifest]]) -> None:
    _, docs = overlay
    ingress = _one(docs, "Ingress", "shelfwise-live")
    routed = {
        path["path"]: path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    # The same paths the live role serves and the api role refuses (live/roles.py).
    assert routed == dict.fromkeys(LIVE_PATHS, "shelfwise-live")
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    heartbeat = Settings(_env_file=None).live_heartbeat_seconds  # type: ignore[call-arg]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > heartbeat


def test_live_pods_scale_on_the_live_connections_metric(
    overlay: tuple[str, list[Manifest]],
) -> None:
    _, docs = overlay
    hpa = _one(docs, "HorizontalPodAutoscaler", "shelfwise-live")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "shelfwise-live"
    (pods_metric,) = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    name = pods_metric["metric"]["name"]
    assert name == LIVE_CONNECTIONS._name  # the gauge the app exports
    adapter = yaml.safe_load((K8S / "prometheus-adapter" / "values.yaml").read_text())
    assert [r["name"]["as"] for r in adapter["rules"]["custom"]] == [name]
    api_hpa = _one(docs, "HorizontalPodAutoscaler", "shelfwise-api")
    assert [m["resource"]["name"] for m in api_hpa["spec"]["metrics"]] == ["cpu"]
    budgets = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    assert budgets == {"shelfwise-api", "shelfwise-live", "shelfwise-worker"}


def test_prod_pins_the_image_by_digest() -> None:
    docs = _render(K8S / "overlays" / "prod")
    images = {c["image"] for _, pod in _pod_specs(docs) for c in pod["containers"]}
    assert len(images) == 1
    assert re.fullmatch(r"[\w./-]+@sha256:[0-9a-f]{64}", images.pop())


def test_external_secret_example_fills_every_key_the_pods_mount() -> None:
    (external,) = _render(K8S / "external-secrets")
    assert external["kind"] == "ExternalSecret"
    assert external["spec"]["target"]["name"] == "shelfwise-secrets"
    keys = {item["secretKey"] for item in external["spec"]["data"]}
    job = _one(_render(K8S / "overlays" / "prod"), "Job", "shelfwise-migrate")
    (secrets,) = [v["secret"] for v in job["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert {item["key"] for item in secrets["items"]} <= keys
    # Each key is the file name of a setting (config.py reads /run/secrets).
    fields = {
        f"shelfwise_{name}" if name not in {"database_url", "redis_url"} else name
        for name in Settings.model_fields
    }
    assert keys <= fields


# --- Containers -------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_and_keeps_its_promises() -> None:
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    if not hadolint.exists():
        hadolint = Path(require_binary("hadolint"))
    done = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    careless = "FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
    refused = subprocess.run(
        [str(hadolint), "-"], input=careless, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0  # the linter does lint

    text = (REPO / "Dockerfile").read_text()
    runtime = text.split("AS runtime", 1)[1]
    assert len(re.findall(r"^FROM ", text, re.M)) >= 3  # uv, build, runtime
    assert "uv" not in re.findall(r"^COPY --from=(\S+)", runtime, re.M)
    user = re.findall(r"^USER (\d+):(\d+)$", runtime, re.M)
    assert user
    assert int(user[-1][0]) != 0
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", runtime, re.M)
    assert entrypoint
    assert json.loads(entrypoint.group(1)) == ["tini", "--", "shelfwise"]
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD \[", runtime, re.M)
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*")] == "*"  # an allow-list: var/secrets never sent
    assert not any(line.startswith("!var") for line in ignored)


def _load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "shelfwise_healthcheck", REPO / "deploy" / "docker" / "healthcheck.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_image_healthcheck_tells_healthy_from_not() -> None:
    health = _load_healthcheck()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert health.check(f"{base}/healthz", 2.0) is None
        assert health.check(f"{base}/readyz", 2.0) == "status 503"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    with socket.socket() as bound:  # a port of ours that never listens: refused
        bound.bind(("127.0.0.1", 0))
        assert health.check(f"http://127.0.0.1:{bound.getsockname()[1]}/healthz", 2.0)
    assert health.health_url({"SHELFWISE_PORT": "9000"}) == "http://127.0.0.1:9000/healthz"
    worker = {"SHELFWISE_HEALTHCHECK_URL": "http://127.0.0.1:8001/metrics"}
    assert health.health_url(worker) == "http://127.0.0.1:8001/metrics"


# --- Compose ----------------------------------------------------------------------------


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
    password is refused, compose's health check command and the `redis_url` secret get in."""
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

                async def answers() -> bool:
                    assert process.poll() is None, f"redis-server exited: {process.returncode}"
                    try:
                        return bool(await client.ping())
                    except (RedisConnectionError, OSError):
                        return False

                await wait_until(answers, timeout=10.0, what="redis-server with the password")
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


# --- One image, three commands ----------------------------------------------------------


def test_every_container_command_is_one_the_cli_accepts(compose: dict[str, Any]) -> None:
    commands = {
        f"compose {name}": service["command"]
        for name, service in compose["services"].items()
        if service.get("image", "").startswith("${SHELFWISE_IMAGE")
    }
    for where, pod in _pod_specs(_render(K8S / "overlays" / "prod")):
        commands[where] = pod["containers"][0]["args"]
    cmd = re.search(r"^CMD (.+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert cmd
    commands["Dockerfile CMD"] = json.loads(cmd.group(1))
    assert {tuple(c) for c in commands.values()} >= {("migrate",), ("worker",)}
    runner = CliRunner()
    for where, args in commands.items():
        # --help after the options: an unknown command or option still fails the parse.
        result = runner.invoke(cli_app, [*args, "--help"])
        assert result.exit_code == 0, (where, args, result.output)
