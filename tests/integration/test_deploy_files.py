"""The container and Kubernetes files, checked statically: no Docker daemon or cluster can
run here (docs/deploy.md, "Containers", "Compose", "Kubernetes").

- both kustomize overlays render, and every object passes strict schema validation for a
  pinned Kubernetes version (kubernetes-validate's bundled schemas: no network);
- the manifests keep the promises the docs make (rolling update without lost capacity,
  probes, drain, security context, the live role, secrets only as files);
- the Dockerfile passes hadolint and keeps its promises (non-root, tini, HEALTHCHECK), and
  the image's health check tells healthy from not;
- every command a container runs (Dockerfile, compose, Kubernetes) is one the `shelfwise`
  CLI accepts.
compose.yaml and its files: test_deploy_compose.py.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from shelfwise.cli import app as cli_app
from shelfwise.config import Settings
from shelfwise.live.roles import LIVE_PATHS
from shelfwise.observability.metrics import LIVE_CONNECTIONS
from tests.support import require_binary

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


# --- One image, three commands ----------------------------------------------------------


def test_every_container_command_is_one_the_cli_accepts() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
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
