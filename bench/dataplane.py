"""Data-plane workloads (issue 3): many small transfers, and worker memory.

Same rules as ``bench.workloads``: only the dask.distributed futures API, identical code
for both systems.
"""

import gc
import statistics
import time

from . import tasks
from .workloads import _settle, _wait_done

perf_counter = time.perf_counter


def _two_workers(client):
    workers = list(client.scheduler_info()["workers"])
    if len(workers) < 2:
        raise RuntimeError("need 2 workers, scheduler reports %r" % (workers,))
    return workers[0], workers[1]


def run_transfers(env, count, mb, repeats):
    """``count`` arrays of ``mb`` MB made on worker 0, each consumed by its own task on
    worker 1 -> MB/s from the arrays being ready to every consumer's result back."""
    client = env.client
    w0, w1 = _two_workers(client)
    nbytes = int(mb * 1_000_000)
    warm = client.map(tasks.make_array, [nbytes] * 4, [-1.0] * 4, workers=[w0], pure=False)
    client.gather(client.map(tasks.consume, warm, workers=[w1], pure=False))
    del warm
    _settle()
    runs = []
    for r in range(repeats):
        fill = float(r + 1)
        arrays = client.map(
            tasks.make_array, [nbytes] * count, [fill] * count, workers=[w0], pure=False
        )
        for a in arrays:
            _wait_done(env, a)
        t0 = perf_counter()
        out = client.gather(client.map(tasks.consume, arrays, workers=[w1], pure=False))
        dt = perf_counter() - t0
        if len(out) != count or any(
            o["first"] != fill or o["nbytes"] != nbytes // 8 * 8 for o in out
        ):
            raise AssertionError("consumers saw wrong data")
        if len({o["pid"] for o in out}) != 1:
            raise AssertionError("consumers ran in several processes")
        del arrays, out
        total = count * nbytes / 1e6
        runs.append({"seconds": dt, "mb_per_s": total / dt, "transfers_per_s": count / dt})
        env.log(
            "transfers run %d: %d x %.1f MB in %.3f s = %.0f MB/s"
            % (r + 1, count, mb, dt, total / dt)
        )
        _settle()
    best = max(runs, key=lambda x: x["mb_per_s"])
    return {
        "count": count,
        "mb": mb,
        "mb_per_s": best["mb_per_s"],
        "transfers_per_s": best["transfers_per_s"],
        "seconds": best["seconds"],
        "median_mb_per_s": statistics.median(x["mb_per_s"] for x in runs),
        "runs": runs,
    }


def worker_rss(client):
    """MB of resident memory of each worker process, after a garbage collection there."""
    return {w: v / 1e6 for w, v in client.run(tasks.rss_after_gc).items()}


def run_rss(env, n, idle):
    """Worker RSS idle (measured when the cluster started) and after ``n`` no-op tasks
    (``map`` + ``gather``, then the futures released)."""
    client = env.client
    before = worker_rss(client)
    start = env.base + 70_000_000
    t0 = perf_counter()
    futures = client.map(tasks.noop, range(start, start + n))
    out = client.gather(futures)
    dt = perf_counter() - t0
    if len(out) != n:
        raise AssertionError("gather returned %d results, expected %d" % (len(out), n))
    del futures, out
    gc.collect()
    _settle()
    _settle()
    after = worker_rss(client)
    env.log(
        "rss: workers idle %s MB, before %s MB, after %d tasks %s MB (%.1f s)"
        % (_fmt(idle), _fmt(before), n, _fmt(after), dt)
    )
    return {
        "n": n,
        "seconds": dt,
        "idle_mb": max(idle.values()) if idle else None,
        "before_mb": max(before.values()),
        "after_mb": max(after.values()),
        "idle": idle,
        "before": before,
        "after": after,
    }


def _fmt(values):
    return "/".join("%.0f" % v for v in values.values()) if values else "-"
