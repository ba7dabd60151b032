"""`shelfwise serve` with a cheap sampling profiler of its event-loop thread.

    python -m bench.profiled OUT.txt serve --port N

For benchmarks that must see where a live process spends its time (`bench.issues --part
sse --profile-live`). A thread samples the main thread's Python stack 200 times a second
(`sys._current_frames`), only between two SIGUSR1 (the benchmark sends one when its
measuring window opens and one when it closes), and writes OUT.txt when the process
exits: the functions by inclusive and by own share of the samples, and the heaviest
stacks. pyinstrument was tried first: its per-call hook slowed a process holding 5,000
streams so much that they took minutes to open, and it could not write its profile
within the harness's stop timeout.
"""

from __future__ import annotations

import collections
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

INTERVAL_S = 0.005


class Sampler:
    def __init__(self) -> None:
        self.on = threading.Event()
        self.stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
        self.samples = 0
        self.main = threading.main_thread().ident

    def toggle(self, signum: int, frame: FrameType | None) -> None:
        if self.on.is_set():
            self.on.clear()
        else:
            self.on.set()

    def run(self) -> None:
        while True:
            self.on.wait()
            time.sleep(INTERVAL_S)
            frame = sys._current_frames().get(self.main or 0)
            stack = []
            while frame is not None:
                code = frame.f_code
                where = code.co_filename.rsplit("site-packages/", 1)[-1]
                where = where.rsplit("/src/", 1)[-1]
                stack.append(f"{where}:{code.co_name}")
                frame = frame.f_back
            self.stacks[tuple(reversed(stack))] += 1
            self.samples += 1

    def report(self) -> str:
        total = max(self.samples, 1)
        inclusive: collections.Counter[str] = collections.Counter()
        own: collections.Counter[str] = collections.Counter()
        for stack, n in self.stacks.items():
            for name in set(stack):
                inclusive[name] += n
            if stack:
                own[stack[-1]] += n
        lines = [f"samples: {self.samples} (every {INTERVAL_S * 1000:g} ms)", "", "inclusive:"]
        lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in inclusive.most_common(60)]
        lines += ["", "own (the frame on top):"]
        lines += [f"{100 * n / total:6.1f}%  {name}" for name, n in own.most_common(40)]
        lines += ["", "heaviest stacks (last 8 frames):"]
        for stack, n in self.stacks.most_common(25):
            lines.append(f"{100 * n / total:6.1f}%  " + " > ".join(stack[-8:]))
        return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1])
    sys.argv = ["shelfwise", *sys.argv[2:]]
    from shelfwise.cli import app

    sampler = Sampler()
    signal.signal(signal.SIGUSR1, sampler.toggle)
    threading.Thread(target=sampler.run, name="sampler", daemon=True).start()
    try:
        app()
    finally:
        out.write_text(sampler.report())


if __name__ == "__main__":
    main()
