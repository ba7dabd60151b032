"""Drive one load run with `wrk` when installed, else with the built-in generator.

wrk is preferred: it is C with epoll, so on a 2-core machine it takes a few percent of a
core where a Python generator takes a whole one away from the servers under test. Both
are run as subprocesses with a hard timeout and report the same `LoadResult`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadResult

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = Path(__file__).with_name("paths.lua")
WRK_TIMEOUT_S = "5s"
# Time a run may take beyond its nominal duration before it is killed.
GRACE_S = 30.0


@dataclass(frozen=True, slots=True)
class LoadSpec:
    port: int
    paths_file: Path
    connections: int
    duration_s: float
    wrk_threads: int = 1
    clients: int = 0  # simulated client addresses sent as X-Forwarded-For (0: none)


def pick_tool(requested: str) -> str:
    """`auto` means wrk if it is on PATH, else the built-in generator."""
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if requested == "wrk" and not shutil.which("wrk"):
        raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install wrk)")
    return requested


def run_load(tool: str, spec: LoadSpec) -> LoadResult:
    return _run_wrk(spec) if tool == "wrk" else _run_builtin(spec)


def _run_wrk(spec: LoadSpec) -> LoadResult:
    threads = max(1, min(spec.wrk_threads, spec.connections))
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{spec.connections}",
        f"-d{max(1, round(spec.duration_s))}s",
        f"--timeout={WRK_TIMEOUT_S}",
        "-s",
        str(WRK_SCRIPT),
        f"http://127.0.0.1:{spec.port}",
    ]
    env = {**os.environ, "BENCH_PATHS": str(spec.paths_file), "BENCH_CLIENTS": str(spec.clients)}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=spec.duration_s + GRACE_S
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    kinds = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return LoadResult(
        tool="wrk",
        requests=raw["requests"],
        duration_s=round(raw["duration_us"] / 1e6, 3),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        errors=sum(kinds.values()),
        error_kinds=kinds,
    )


def _run_builtin(spec: LoadSpec) -> LoadResult:
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(spec.port),
        "--paths",
        str(spec.paths_file),
        "--connections",
        str(spec.connections),
        "--duration",
        str(spec.duration_s),
        "--clients",
        str(spec.clients),
    ]
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=spec.duration_s + GRACE_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.loadgen failed ({done.returncode}): {done.stderr}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    raw.pop("rps", None)
    return LoadResult(**raw)
