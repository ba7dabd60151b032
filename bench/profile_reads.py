"""Where a cached `GET /v1/products/{id}` spends its CPU: the whole app, driven in-process.

    python -m bench.profile_reads [--requests 20000] [--concurrency 16] [--html out.html]

As `bench.profile_orders`: the bench database (`var/bench`), Shelfwise's app with the
bench's settings (access log on, JSON logs, rate limiting off), the ASGI app called
directly (no socket, no HTTP parser). Every one of `--products` ids is read once first, so
the measured reads are all cache hits (the counters are printed to show it). Prints the
process's CPU per read and where it went, by package, from `cProfile` (or a pyinstrument
page with `--html`). Runs ~20 s. The access log goes to a temporary file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import random
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from bench.profile_orders import _call, bench_app, report
from bench.servers import prepare_database


def _cache_counts() -> dict[str, float]:
    from shelfwise.observability.metrics import CACHE_REQUESTS

    return {
        s.labels["result"]: s.value
        for metric in CACHE_REQUESTS.collect()
        for s in metric.samples
        if s.name.endswith("_total") and s.labels.get("cache") == "product"
    }


def _time_gc() -> tuple[dict[int, list[float]], Any]:
    """Each collector pass's duration by generation, while the reads run (the read tail:
    could a young pass over the cached entries stall the loop?)."""
    passes: dict[int, list[float]] = defaultdict(list)
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            passes[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(callback)
    return passes, callback


async def _run(args: argparse.Namespace, url: str, ids: list[str], out: Any) -> None:
    app = bench_app(url)
    async with app.router.lifespan_context(app):
        ids = ids[: args.products]
        for i in range(0, len(ids), 64):  # warm: every id read once
            await asyncio.gather(
                *(_call(app, "GET", f"/v1/products/{p}", {}, b"") for p in ids[i : i + 64])
            )
        rng = random.Random(14)
        statuses: dict[int, int] = defaultdict(int)

        async def worker(n: int) -> None:
            for _ in range(n):
                status, _ = await _call(app, "GET", f"/v1/products/{rng.choice(ids)}", {}, b"")
                statuses[status] += 1

        per = max(1, args.requests // args.concurrency)
        before = _cache_counts()
        gc_passes, gc_callback = _time_gc()
        profiler: Any
        if args.html:
            from pyinstrument import Profiler

            profiler = Profiler(async_mode="disabled", interval=0.0002)
        else:
            profiler = cProfile.Profile()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if args.profile:
            profiler.start() if args.html else profiler.enable()
        await asyncio.gather(*(worker(per) for _ in range(args.concurrency)))
        if args.profile:
            profiler.stop() if args.html else profiler.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        after = _cache_counts()
        gc.callbacks.remove(gc_callback)
        done = sum(statuses.values())
        delta = {k: int(after.get(k, 0) - before.get(k, 0)) for k in after}
        print(
            f"statuses {dict(statuses)}  reads/s {done / wall:.0f}  "
            f"process CPU/read {cpu / done * 1e6:.0f} us  cache {delta}"
            f"{' (profiler overhead included)' if args.profile else ''}",
            file=out,
        )
        if not gc_passes:
            print("gc: no collector pass while the reads ran", file=out)
        for generation, times in sorted(gc_passes.items()):
            print(
                f"gc generation {generation}: {len(times)} passes, longest"
                f" {max(times) * 1e3:.1f} ms, total {sum(times) * 1e3:.1f} ms"
                f" ({', '.join(f'{t * 1e3:.1f}' for t in times[:12])} ms)",
                file=out,
            )
        if args.profile:
            report(profiler, args, done, "read", out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--html")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--top", type=int, default=50)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    args = parser.parse_args()
    url, ids = prepare_database(10_000)
    report = sys.stdout
    with (
        tempfile.NamedTemporaryFile("w", prefix="profile-reads-", suffix=".log") as log,
        contextlib.redirect_stdout(log),
    ):
        if args.loop == "uvloop":  # as `shelfwise serve` runs
            import uvloop

            uvloop.run(_run(args, url, ids, report))
        else:
            asyncio.run(_run(args, url, ids, report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
