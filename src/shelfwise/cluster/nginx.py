"""nginx for the cluster: deploy/nginx/ rendered into `<run dir>/nginx/`.

The files keep production's layout (docs/deploy.md, "nginx"): the main `nginx.conf`
includes `shelfwise/maps.conf`, `shelfwise/upstreams.conf` and `shelfwise/locations.conf`,
and the certificate sits in `shelfwise/tls/`. Only `nginx.conf` (ports, edge limits, run
paths) and `upstreams.conf` (the API instances, and the live instances the stream
locations go to: the API ones again when there are none) have anything filled in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy" / "nginx"
SHARED_FILES = ("maps.conf", "locations.conf")


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    rate: str = "100r/s"  # per client address
    burst: int = 200
    connections: int = 1024  # open connections per client address


def upstream_servers(ports: list[int]) -> str:
    # One failure takes an instance out for 2 s: a restarting instance is skipped at once
    # and retried soon after it is back.
    return "\n".join(f"    server 127.0.0.1:{port} max_fails=1 fail_timeout=2s;" for port in ports)


def render_nginx(
    directory: Path,
    *,
    http_port: int,
    https_port: int,
    api_ports: list[int],
    tls: tuple[Path, Path],
    live_ports: list[int] | None = None,
    limits: EdgeLimits | None = None,
    deploy_dir: Path = DEPLOY_DIR,
) -> Path:
    """Write the configuration under `directory`; return the main file's path."""
    limits = limits or EdgeLimits()
    shelfwise = directory / "shelfwise"
    for sub in (shelfwise / "tls", directory / "logs", directory / "temp"):
        sub.mkdir(parents=True, exist_ok=True)
    for name in SHARED_FILES:
        shutil.copyfile(deploy_dir / name, shelfwise / name)
    for source, name in zip(tls, ("tls.crt", "tls.key"), strict=True):
        shutil.copyfile(source, shelfwise / "tls" / name)
    (shelfwise / "tls" / "tls.key").chmod(0o600)
    upstreams = (deploy_dir / "upstreams.conf").read_text()
    (shelfwise / "upstreams.conf").write_text(
        upstreams.replace("@SERVERS@", upstream_servers(api_ports)).replace(
            "@LIVE_SERVERS@", upstream_servers(live_ports or api_ports)
        )
    )
    main = (deploy_dir / "nginx.conf").read_text()
    # As root, nginx's workers would run as `nobody` and could not write the temp paths
    # under a private run directory.
    user = "user root;" if os.geteuid() == 0 else ""
    for key, value in {
        "@USER@": user,
        "@HTTP_PORT@": str(http_port),
        "@HTTPS_PORT@": str(https_port),
        "@EDGE_RATE@": limits.rate,
        "@EDGE_BURST@": str(limits.burst),
        "@CONN_LIMIT@": str(limits.connections),
    }.items():
        main = main.replace(key, value)
    path = directory / "nginx.conf"
    path.write_text(main)
    return path


def nginx_argv(binary: str, conf: Path) -> list[str]:
    """The master stays in the foreground, so a supervisor can watch and signal it."""
    return [binary, "-p", str(conf.parent), "-c", conf.name, "-g", "daemon off;"]


def check_config(binary: str, conf: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the rendered configuration (returncode 0 when accepted)."""
    return subprocess.run(  # noqa: S603 (our binary, our file)
        [binary, "-t", "-p", str(conf.parent), "-c", conf.name],
        capture_output=True,
        text=True,
        check=False,
    )
