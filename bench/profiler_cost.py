"""``python -m bench.profiler_cost``: what the workers' sampling profiler costs a task.

A thread runs fixed pure-Python work 25 frames deep (between the profiler's ``begin`` and
``end``, as a worker's executor does) while the real sampler thread runs (on) or not
(off), in alternating pairs; prints the task thread's CPU and wall time, the sampler
thread's CPU, and the per-pair on/off ratios. CPU time is less sensitive to a loaded
machine than wall time; run it on a quiet one for a figure worth quoting.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

from rdist.protocol import serialize, spec
from rdist.worker.profiler import INTERVAL, Profiler


def work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def deep(depth: int, n: int) -> int:
    return deep(depth - 1, n) if depth else work(n)


class _Discard:
    """A store whose profile batches go nowhere (no Redis needed)."""

    class profiles:  # noqa: N801
        @staticmethod
        def add(batch: Any) -> None:
            pass


def one_run(on: bool, iterations: int) -> dict[str, float]:
    stop = threading.Event()
    profiler = Profiler("bench", _Discard(), stop, interval=INTERVAL if on else 0)  # type: ignore[arg-type]
    sampler = threading.Thread(target=profiler.run)
    sampler.start()
    blob = serialize.to_blob(((20, iterations), {}))
    out: dict[str, float] = {}

    def task() -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        profiler.begin("deep-1")
        spec.run_spec(deep, blob, spec.CALL, {})
        profiler.end()
        out["cpu"], out["wall"] = time.thread_time() - cpu, time.perf_counter() - wall

    worker = threading.Thread(target=task)
    worker.start()
    clock = time.pthread_getcpuclockid(sampler.ident or 0) if on else None
    worker.join()
    out["sampler"] = time.clock_gettime(clock) if clock is not None else 0.0
    stop.set()
    profiler.stop()
    sampler.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=4_000_000)
    args = parser.parse_args()
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for i in range(args.pairs):
        for on in (True, False) if i % 2 else (False, True):
            runs[on].append(one_run(on, args.iterations))
    for on in (False, True):
        rows = runs[on]
        print(
            f"{'on ' if on else 'off'}  task cpu {statistics.median(r['cpu'] for r in rows):.3f} s"
            f"  wall {statistics.median(r['wall'] for r in rows):.3f} s"
            f"  sampler cpu {statistics.median(r['sampler'] for r in rows):.4f} s"
        )
    for measure in ("cpu", "wall"):
        ratios = [a[measure] / b[measure] for a, b in zip(runs[True], runs[False])]
        shown = ", ".join(f"{r:.3f}" for r in ratios)
        print(f"task {measure} on/off per pair: {shown}; median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
