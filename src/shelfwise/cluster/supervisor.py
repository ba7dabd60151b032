"""Child processes of the cluster: start, probe, stop in order, restart when they die.

Each child runs in its own process group, so a Ctrl-C at the terminal reaches only the
runner, which then stops the children in order (load balancer first, then the instances,
which drain, then Redis and pgbouncer). On Linux each child also gets SIGKILL if the runner
itself dies (`PR_SET_PDEATHSIG`); that flag is not inherited by a child's own children
(nginx's workers) and is cleared when a child switches user (pgbouncer as root), so the
keeper (`keeper.py`) kills every child's whole process group once the runner is gone: a
`kill -9` of the runner leaves no orphans either.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger("shelfwise.cluster")

Probe = Callable[[], Awaitable[bool]]
PR_SET_PDEATHSIG = 1


# Loaded here, once, not between fork and exec: dlopen there could deadlock on a lock
# another thread of the parent held at fork time.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


KEEPER = Path(__file__).with_name("keeper.py")


class Keeper:
    """The supervisor's side of `keeper.py`: tells it which process groups to kill if the
    supervisor's process dies; `close()` after an orderly stop."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (our interpreter, our file)
            [sys.executable, "-I", str(KEEPER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,  # out of reach of signals to the runner's group
        )

    def _tell(self, line: str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return
        with contextlib.suppress(BrokenPipeError):
            stdin.write(line.encode() + b"\n")
            stdin.flush()

    def watch(self, group: int) -> None:
        self._tell(f"+ {group}")

    def forget(self, group: int) -> None:
        self._tell(f"- {group}")

    def close(self) -> None:
        """End of input: the keeper kills what is still listed (nothing, after a clean
        stop) and exits."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    # Lower tiers start first and stop last (0: Redis, pgbouncer; 1: instances; 2: nginx).
    tier: int = 1
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 15.0
    probe: Probe | None = None  # answers True once the child serves


@dataclass
class Child:
    spec: ChildSpec
    keeper: Keeper | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    held: bool = False  # stopped on purpose: the supervisor leaves it down
    exits: list[int] = field(default_factory=list)
    _swept: int | None = None  # the last pid whose process group was cleaned up

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        if self.process is None:
            return False
        if self.process.poll() is None:
            return True
        self._sweep_group(self.process.pid)
        return False

    def _sweep_group(self, pid: int) -> None:
        """Once a child is reaped: kill what is left in its process group (an nginx master
        killed with -9 leaves its workers holding the ports a restart needs) and take the
        group off the keeper's list. The kernel keeps a pid while it names a live process
        group, so this reaches only the child's own leftovers."""
        if self._swept == pid:
            return
        self._swept = pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if self.keeper is not None:
            self.keeper.forget(pid)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.spec.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 (argv built by topology)
                self.spec.argv,
                env=self.spec.env,
                cwd=self.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                process_group=0,
                preexec_fn=die_with_parent,
            )
        if self.keeper is not None:
            self.keeper.watch(self.process.pid)
        self.started_at = time.monotonic()
        self.held = False

    def send(self, signum: int) -> None:
        if self.alive and self.process is not None:
            self.process.send_signal(signum)

    async def wait_exit(self, seconds: float) -> int | None:
        """The exit code, or None if still running after `seconds`."""
        deadline = time.monotonic() + seconds
        while self.alive and time.monotonic() < deadline:  # noqa: ASYNC110 (a pid, no event)
            await asyncio.sleep(0.05)
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            self.exits.append(code)
        return code

    async def stop(self, *, grace: float | None = None) -> int | None:
        """Graceful stop (its stop signal), SIGKILL after the timeout; the supervisor
        leaves it down until `start()`."""
        self.held = True
        if not self.alive:
            return self.process.poll() if self.process is not None else None
        self.send(self.spec.stop_signal)
        code = await self.wait_exit(self.spec.stop_timeout if grace is None else grace)
        if code is None:
            log.warning("cluster_child_killed", child=self.name, after="stop timeout")
            return await self.kill()
        return code

    async def kill(self) -> int | None:
        """SIGKILL to the child's whole process group: no drain, no goodbye."""
        self.held = True
        if self.alive and self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        return await self.wait_exit(10.0)

    async def wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if not self.alive:
                raise RuntimeError(
                    f"{self.name} exited with {self.process and self.process.poll()}"
                    f" (log: {self.spec.log_path})"
                )
            if self.spec.probe is None or await self.spec.probe():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} not ready after {seconds}s ({self.spec.log_path})")
            await asyncio.sleep(0.1)


class Supervisor:
    """Starts children tier by tier, restarts any that dies (unless held), stops in order."""

    def __init__(self, specs: Sequence[ChildSpec], *, max_backoff: float = 10.0) -> None:
        self.keeper = Keeper()
        self.children = {spec.name: Child(spec, self.keeper) for spec in specs}
        self.max_backoff = max_backoff
        self._stopping = False

    def __getitem__(self, name: str) -> Child:
        return self.children[name]

    def tiers(self) -> list[list[Child]]:
        levels = sorted({child.spec.tier for child in self.children.values()})
        return [[c for c in self.children.values() if c.spec.tier == t] for t in levels]

    async def start_all(self, *, ready_timeout: float = 60.0) -> None:
        for tier in self.tiers():
            for child in tier:
                child.start()
            await asyncio.gather(*(child.wait_ready(ready_timeout) for child in tier))

    async def watch(self, stop: asyncio.Event, *, interval: float = 0.2) -> None:
        """Restart children that died, with exponential backoff (reset after 30 s up)."""
        due: dict[str, float] = {}
        while not stop.is_set() and not self._stopping:
            now = time.monotonic()
            for child in self.children.values():
                if child.alive or child.held or child.process is None:
                    continue
                if child.name not in due:
                    code = child.process.poll()
                    ran = now - child.started_at
                    failures = 0 if ran > 30 else child.restarts
                    delay = min(self.max_backoff, 0.5 * 2**failures)
                    due[child.name] = now + delay
                    log.warning(
                        "cluster_child_exited",
                        child=child.name,
                        code=code,
                        restart_in=round(delay, 1),
                    )
                elif now >= due[child.name]:
                    del due[child.name]
                    child.restarts += 1
                    child.start()
                    log.info("cluster_child_restarted", child=child.name, pid=child.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def stop_all(self) -> None:
        """Highest tier first; within a tier in parallel (instances drain together)."""
        self._stopping = True
        try:
            for tier in reversed(self.tiers()):
                await asyncio.gather(*(child.stop() for child in tier))
        finally:
            await asyncio.to_thread(self.keeper.close)
