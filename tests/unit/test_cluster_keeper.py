"""The keeper's list of process groups (`shelfwise.cluster.keeper`), and that end of input
kills what is still listed — whatever the group's leader did with its own signals."""

from __future__ import annotations

import subprocess
import sys
import time

from shelfwise.cluster.keeper import read_groups
from shelfwise.cluster.supervisor import Keeper


def test_groups_are_added_and_forgotten_and_a_cut_line_is_ignored() -> None:
    assert read_groups(["+ 10\n", "+ 11\n", "- 10\n", "+ 12\n", "+ 1"]) == {11, 12, 1}
    assert read_groups(["+ 10\n", "+ 1"[:2]]) == {10}  # "+ " cut short by the writer's death


def test_end_of_input_kills_every_listed_group_and_nothing_else() -> None:
    # A leader that ignores SIGTERM/SIGINT and a child of it (like nginx's master and
    # worker): SIGKILL to the group takes both.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    listed = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, process_group=0
    )
    spared = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert listed.stdout is not None
        grandchild = int(listed.stdout.readline())
        keeper = Keeper()
        keeper.watch(listed.pid)
        keeper.watch(spared.pid)
        keeper.forget(spared.pid)
        keeper.close()
        assert keeper.process.returncode == 0
        assert listed.wait(timeout=5) == -9
        assert gone_within(grandchild, seconds=5)
        assert spared.poll() is None, "a forgotten group was killed"
    finally:
        for process in (listed, spared):
            process.kill()
            process.wait(timeout=5)
        if listed.stdout is not None:
            listed.stdout.close()


def gone_within(pid: int, *, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a pid: there is no event to wait on
    return True


def running(pid: int) -> bool:
    """Not a zombie (killed, reparented, maybe not reaped yet) and not gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
