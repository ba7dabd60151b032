"""The keeper: kills what is left of the cluster's children once the runner is gone.

`PR_SET_PDEATHSIG` alone does not guarantee that nothing outlives a `kill -9` of the
runner: the flag is per process, so nginx's worker processes (forked by the master) never
had it, and a credential change clears it (pgbouncer switching user as root). The keeper
is a small process of its own, in its own process group (so a Ctrl-C or a `kill -9` of the
runner's group does not reach it), started by the supervisor before any child. The
supervisor writes `+<pid>` for every child it starts (each child leads its own process
group) and `-<pid>` once it has reaped one. When its stdin reaches end of file — the
runner closed it after an orderly stop, or the kernel closed it because the runner died,
however it died — the keeper sends SIGKILL to every process group still listed and exits.

Run by path with the standard library only (`python -I keeper.py`): it must start in a
few milliseconds and not import the application.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def read_groups(lines: list[str] | None = None) -> set[int]:
    """The process groups still listed when the input ends."""
    groups: set[int] = set()
    for line in lines if lines is not None else sys.stdin:
        sign, _, number = line.strip().partition(" ")
        if not number.isdigit():
            continue  # a line cut short by the runner's death
        if sign == "+":
            groups.add(int(number))
        elif sign == "-":
            groups.discard(int(number))
    return groups


def kill_groups(groups: set[int]) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
            os.killpg(group, signal.SIGKILL)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the runner's
    kill_groups(read_groups())


if __name__ == "__main__":
    main()
