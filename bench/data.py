"""The data-heavy workloads: a dataframe shuffle, a groupby-aggregation with a merge, and an
array rechunk, each on about a gigabyte of generated data.

The same dask collection is computed on both systems through ``client.compute``, with each
system's own P2P method (``"p2p"``): dask.distributed runs its P2P extension, rdist its
native exchange (``rdist.shuffle``: the client rewrites dask's P2P tasks at submission),
for the dataframes and for the array rechunk. ``BENCH_RDIST_RECHUNK_METHOD=tasks`` measures
rdist's rechunk with dask's task-based algorithm instead (for comparison). Every result is
checked: a shuffle by counting distinct keys per output partition (each key must land in
exactly one), the aggregations and the rechunk against sums computed from the same seeds.

Peak RSS of the worker processes is sampled during each run (``_PeakRSS``, as ``many``).
"""

import os
import statistics
import time

from .workloads import _PeakRSS, _settle

perf_counter = time.perf_counter

#: the dataframe shuffle and array rechunk methods each system is measured with (see the
#: docstring)
METHODS = {
    "dask": {"shuffle": "p2p", "rechunk": "p2p"},
    "rdist": {"shuffle": "p2p", "rechunk": os.environ.get("BENCH_RDIST_RECHUNK_METHOD", "p2p")},
}


def make_partition(i, rows, nkeys):
    """One partition of the generated frame: ``rows`` rows, keys in ``range(nkeys)``."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {
            "k": rng.integers(0, nkeys, rows),
            "v": rng.random(rows),
            "w": rng.integers(0, 1000, rows),
        }
    )


def distinct_per_partition(part):
    import pandas as pd

    return pd.Series([part["k"].nunique()])


def _frame(nparts, rows, nkeys):
    import dask.dataframe as dd

    return dd.from_map(make_partition, range(nparts), rows=rows, nkeys=nkeys)


def _run(env, system, name, repeats, build, check):
    """Time ``client.compute(build())`` ``repeats`` times (after a warm-up run) with the
    workers' peak RSS; ``check(value)`` raises when the answer is wrong."""
    import dask

    methods = METHODS[system]
    method = methods["rechunk" if name == "rechunk" else "shuffle"]
    runs = []
    config = {
        "dataframe.shuffle.method": methods["shuffle"],
        "array.rechunk.method": methods["rechunk"],
    }
    for r in range(repeats + 1):
        with dask.config.set(config):
            collection = build()
            ntasks = len(collection.__dask_graph__())
            with _PeakRSS() as rss:
                t0 = perf_counter()
                value = env.client.compute(collection).result()
                dt = perf_counter() - t0
        check(value)
        if r:
            worker_mb = rss.mb("worker")
            runs.append({"seconds": dt, "tasks": ntasks, "worker_peak_mb": worker_mb})
            env.log(
                "%s run %d (%s): %d tasks in %.2f s, largest worker peak %.0f MB"
                % (name, r, method, ntasks, dt, worker_mb)
            )
        _settle()
    best = min(runs, key=lambda x: x["seconds"])
    return {
        "method": method,
        "seconds": best["seconds"],
        "median_seconds": statistics.median(x["seconds"] for x in runs),
        "worker_peak_mb": max(x["worker_peak_mb"] for x in runs),
        "tasks": best["tasks"],
        "runs": runs,
    }


def run_shuffle(env, system, nparts, rows, repeats):
    """``df.shuffle("k")`` of ``nparts`` x ``rows`` rows (24 bytes a row)."""
    nkeys = nparts * rows // 10

    def build():
        shuffled = _frame(nparts, rows, nkeys).shuffle("k")
        return shuffled.map_partitions(distinct_per_partition, meta=(None, "int64")).sum()

    def check(value):
        # every key that exists lands in exactly one output partition
        import numpy as np

        present = np.zeros(nkeys, dtype=bool)
        for i in range(nparts):
            present[make_partition(i, rows, nkeys)["k"].to_numpy()] = True
        if int(value) != int(present.sum()):
            raise AssertionError("shuffle: %r distinct keys, expected %d" % (value, present.sum()))

    out = _run(env, system, "shuffle", repeats, build, check)
    out.update(rows=nparts * rows, partitions=nparts, mb=nparts * rows * 24 / 1e6)
    return out


def run_groupby_merge(env, system, nparts, rows, repeats):
    """``df.merge(df.groupby("k").v.sum(), on k)`` and the sum of the joined column."""
    nkeys = nparts * rows // 100

    def build():
        df = _frame(nparts, rows, nkeys)
        totals = df.groupby("k").v.sum().rename("total").reset_index()
        return df.merge(totals, on="k").total.sum()

    def check(value):
        # each row joins its key's total: the sum is sum over keys of count * total
        import pandas as pd

        parts = [make_partition(i, rows, nkeys) for i in range(nparts)]
        whole = pd.concat(parts)
        g = whole.groupby("k").v.agg(["sum", "count"])
        expected = float((g["sum"] * g["count"]).sum())
        if abs(float(value) - expected) > 1e-6 * abs(expected):
            raise AssertionError("groupby-merge: %r, expected %r" % (value, expected))

    out = _run(env, system, "groupby-merge", repeats, build, check)
    out.update(rows=nparts * rows, partitions=nparts, mb=nparts * rows * 24 / 1e6)
    return out


def run_rechunk(env, system, size, repeats):
    """A ``size``² float64 array in 1,000² chunks rechunked to (100, size), then summed."""
    import dask.array as da

    def build():
        x = da.random.RandomState(7).random_sample((size, size), chunks=(1000, 1000))
        return x.rechunk((100, size)).sum()

    expected = {}

    def check(value):
        if "sum" not in expected:
            x = da.random.RandomState(7).random_sample((size, size), chunks=(1000, 1000))
            expected["sum"] = float(x.sum().compute(scheduler="threads"))
        if abs(float(value) - expected["sum"]) > 1e-9 * expected["sum"]:
            raise AssertionError("rechunk: %r, expected %r" % (value, expected["sum"]))

    out = _run(env, system, "rechunk", repeats, build, check)
    out.update(size=size, mb=size * size * 8 / 1e6)
    return out
