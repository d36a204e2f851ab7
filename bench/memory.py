"""Wide graphs and peak worker memory: what holding root tasks back (dask's *queuing*,
rdist's ``queued`` state, ``rdist/scheduler/placement.py``) is worth.

Two workloads, the same graph on both systems, peak RSS of the worker processes sampled
during each run (``_PeakRSS``, as ``many`` and the data workloads):

- ``wide``: ``--wide-n`` root tasks each returning a ``--wide-mb`` MB array, reduced
  pairwise (a binary tree of sums) to one number, as a raw task graph through
  ``client.get``. Without queuing every root would be released to the workers at once and
  most of the n x MB would sit in memory before the first sum; with it a worker holds a
  few roots and the partial sums they feed.
- ``wide_array``: ``da.random.random((--wide-array-size,)*2, chunks=1000).sum()`` (20,000²
  by default: 400 chunks of 8 MB, 3.2 GB in all), through ``client.compute``;
- ``wide_pair``: ``(x - y).sum()`` of two such arrays (6.4 GB): each difference needs a
  chunk of both, so roots that run far ahead of the differences pile up in memory -- the
  graph shape dask's queuing was made for.

Each result is checked (the tree's sum is known in closed form; the array's sum against
the same array summed by dask's threaded scheduler, once).
"""

import statistics
import time

from .workloads import _PeakRSS, _settle

perf_counter = time.perf_counter


def leaf(i, mb):
    """A root task's result: ``mb`` MB of float64, every element ``i``."""
    import numpy as np

    return np.full(int(mb * (1 << 20)) // 8, float(i))


def combine(a, b):
    return a + b


def first(x):
    return float(x[0])


def wide_graph(n, mb):
    """Raw graph: ``n`` leaves, a pairwise sum tree over them, and its first element."""
    dsk = {("leaf", i): (leaf, i, mb) for i in range(n)}
    level, keys = 0, [("leaf", i) for i in range(n)]
    while len(keys) > 1:
        nxt = []
        for j in range(0, len(keys) - 1, 2):
            key = ("sum", level, j // 2)
            dsk[key] = (combine, keys[j], keys[j + 1])
            nxt.append(key)
        if len(keys) % 2:
            nxt.append(keys[-1])
        keys, level = nxt, level + 1
    dsk["total"] = (first, keys[0])
    return dsk


def _measure(env, name, repeats, run, check):
    runs = []
    for r in range(repeats):
        with _PeakRSS() as rss:
            t0 = perf_counter()
            value, ntasks = run()
            dt = perf_counter() - t0
        check(value)
        worker_mb = rss.mb("worker")
        runs.append({"seconds": dt, "tasks": ntasks, "worker_peak_mb": worker_mb})
        env.log(
            "%s run %d: %d tasks in %.2f s, largest worker peak %.0f MB"
            % (name, r + 1, ntasks, dt, worker_mb)
        )
        _settle()
    return {
        "seconds": min(x["seconds"] for x in runs),
        "median_seconds": statistics.median(x["seconds"] for x in runs),
        "worker_peak_mb": max(x["worker_peak_mb"] for x in runs),
        "median_worker_peak_mb": statistics.median(x["worker_peak_mb"] for x in runs),
        "tasks": runs[0]["tasks"],
        "runs": runs,
    }


def run_wide(env, n, mb, repeats):
    """``n`` roots of ``mb`` MB reduced pairwise (see the module doc)."""

    def run():
        dsk = wide_graph(n, mb)
        return env.client.get(dsk, "total"), len(dsk)

    def check(value):
        expected = n * (n - 1) / 2
        if float(value) != expected:
            raise AssertionError("wide: %r, expected %r" % (value, expected))

    out = _measure(env, "wide", repeats, run, check)
    out.update(roots=n, mb_per_root=mb, total_mb=n * mb)
    return out


def run_wide_array(env, size, repeats, pair=False):
    """``da.random.random((size, size), chunks=1000).sum()``, or with ``pair`` the sum of
    the difference of two such arrays (see the module doc)."""
    import dask.array as da

    def build():
        x = da.random.RandomState(11).random_sample((size, size), chunks=1000)
        if pair:
            x = x - da.random.RandomState(12).random_sample((size, size), chunks=1000)
        return x.sum()

    expected = {}

    def run():
        collection = build()
        return env.client.compute(collection).result(), len(collection.__dask_graph__())

    def check(value):
        if "sum" not in expected:
            expected["sum"] = float(build().compute(scheduler="threads"))
        if abs(float(value) - expected["sum"]) > 1e-9 * abs(expected["sum"]) + 1e-6:
            raise AssertionError("%s: %r, expected %r" % (name, value, expected["sum"]))

    name = "wide_pair" if pair else "wide_array"
    out = _measure(env, name, repeats, run, check)
    out.update(size=size, total_mb=size * size * 8 * (2 if pair else 1) / 1e6)
    return out
