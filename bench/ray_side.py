"""The Ray side of the benchmark: the workloads that exist on Ray, same semantics.

Run by ``python -m bench.side --system ray`` (which hands over to ``run`` below).
One local Ray instance: ``ray.init(num_cpus=2)``, i.e. two worker processes that
each run one task at a time -- the counterpart of the 2 x 1-thread LocalClusters.
The task functions are the ones in ``bench/tasks.py``, wrapped with ``ray.remote``.

Implemented: ``map``, ``latency``, ``chain`` and ``transfer``.  ``transfer`` is *not*
comparable (see ``run_transfer``).  ``array``, ``many``, ``transfers`` and ``rss`` are
recorded as skipped, so the table shows "-" for them.
"""

import logging
import os
import random
import shutil
import statistics
import tempfile
import time
import traceback

from . import tasks
from .side import run_jobs
from .workloads import _percentile, _settle

perf_counter = time.perf_counter

N_CPUS = 2
IMPLEMENTED = ("map", "latency", "chain", "transfer")
#: the value written as "comparable": False into the transfer result (and the table)
TRANSFER_NOTE = ("one host's shared-memory object store: the consumer maps the producer's "
                 "array without copying it, and Ray picks the worker processes itself")

# Before ``import ray``: no usage-stats reporting, and node address = loopback (the
# default picks the host's outward-facing address and listens there).  The second
# variable is the one Ray itself uses for the same purpose on macOS and Windows.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def _pid_after(seconds):
    """Sleep, then return this process's id (start-up check: 2 concurrent tasks)."""
    time.sleep(seconds)
    return os.getpid()


def start(temp_dir):
    """``ray.init`` a private, quiet, loopback-only 2-CPU instance; return ``ray``."""
    import ray

    ray.init(
        address="local",  # never attach to a cluster named by RAY_ADDRESS
        num_cpus=N_CPUS,
        num_gpus=0,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        _node_ip_address="127.0.0.1",
        _temp_dir=temp_dir,
    )
    # Both worker processes are up once two concurrent tasks have run in two of them.
    pid_after = ray.remote(_pid_after)
    pids = set(ray.get([pid_after.remote(0.05) for _ in range(N_CPUS)]))
    if len(pids) != N_CPUS:
        raise RuntimeError("expected %d worker processes, tasks ran in %r" % (N_CPUS, pids))
    return ray, sorted(pids)


class Remote:
    """The bench.tasks functions as Ray remote functions."""

    def __init__(self, ray):
        self.noop = ray.remote(tasks.noop)
        self.inc = ray.remote(tasks.inc)
        self.make_array = ray.remote(tasks.make_array)
        self.consume = ray.remote(tasks.consume)


def run_map(ray, fn, base, n, repeats, log):
    """``[noop.remote(i) for i in range(n)]`` + ``ray.get`` -> tasks/s."""
    ray.get([fn.noop.remote(i) for i in range(base - 200, base)])
    _settle()
    runs = []
    for r in range(repeats):
        start = base + r * n
        t0 = perf_counter()
        refs = [fn.noop.remote(i) for i in range(start, start + n)]
        out = ray.get(refs)
        dt = perf_counter() - t0
        if len(out) != n:
            raise AssertionError("ray.get returned %d results, expected %d" % (len(out), n))
        del refs, out
        runs.append({"seconds": dt, "tasks_per_s": n / dt})
        log("map run %d: %d tasks in %.3f s = %.0f tasks/s" % (r + 1, n, dt, n / dt))
        _settle()
    best = max(runs, key=lambda x: x["tasks_per_s"])
    return {"n": n, "tasks_per_s": best["tasks_per_s"], "seconds": best["seconds"],
            "median_tasks_per_s": statistics.median(x["tasks_per_s"] for x in runs), "runs": runs}


def run_latency(ray, fn, base, rounds, warmup, repeats, log):
    """Sequential ``ray.get(inc.remote(x))`` round trips -> ms."""
    arg = base + 10_000_000
    for _ in range(warmup):
        if ray.get(fn.inc.remote(arg)) != arg + 1:
            raise AssertionError("wrong result during warm-up")
        arg += 1
    runs = []
    for r in range(repeats):
        samples = []
        for _ in range(rounds):
            t0 = perf_counter()
            v = ray.get(fn.inc.remote(arg))
            samples.append((perf_counter() - t0) * 1e3)
            if v != arg + 1:
                raise AssertionError("inc(%d) returned %r" % (arg, v))
            arg += 1
        run = {"median_ms": statistics.median(samples), "p90_ms": _percentile(samples, 90),
               "p99_ms": _percentile(samples, 99), "min_ms": min(samples),
               "mean_ms": statistics.fmean(samples)}
        runs.append(run)
        log("latency run %d: %d round trips, median %.3f ms, p90 %.3f ms"
            % (r + 1, rounds, run["median_ms"], run["p90_ms"]))
    best = min(runs, key=lambda x: x["median_ms"])
    return dict(best, rounds=rounds, warmup=warmup, runs=runs,
                median_of_medians_ms=statistics.median(x["median_ms"] for x in runs))


def run_chain(ray, fn, base, length, repeats, log):
    """``x = inc.remote(x)`` ``length`` times, then ``ray.get(x)`` -> tasks/s."""
    x = fn.inc.remote(base + 20_000_000)
    for _ in range(9):
        x = fn.inc.remote(x)
    ray.get(x)
    del x
    _settle()
    runs = []
    for r in range(repeats):
        start = base + 30_000_000 + r * 1_000_000
        t0 = perf_counter()
        x = fn.inc.remote(start)
        for _ in range(length - 1):
            x = fn.inc.remote(x)
        v = ray.get(x)
        dt = perf_counter() - t0
        if v != start + length:
            raise AssertionError("chain result %r, expected %d" % (v, start + length))
        del x
        runs.append({"seconds": dt, "tasks_per_s": length / dt})
        log("chain run %d: %d tasks in %.3f s = %.0f tasks/s" % (r + 1, length, dt, length / dt))
        _settle()
    best = max(runs, key=lambda x: x["tasks_per_s"])
    return {"length": length, "tasks_per_s": best["tasks_per_s"], "seconds": best["seconds"],
            "median_tasks_per_s": statistics.median(x["tasks_per_s"] for x in runs),
            "verified": True, "runs": runs}


def _one_transfer(ray, fn, nbytes, fill):
    a = fn.make_array.remote(nbytes, fill)
    ray.wait([a], fetch_local=False)  # finished (in the object store), not fetched here
    t0 = perf_counter()
    info = ray.get(fn.consume.remote(a))
    dt = perf_counter() - t0
    del a
    if info["nbytes"] != (nbytes // 8) * 8 or info["first"] != fill or info["last"] != fill:
        raise AssertionError("consumer saw wrong data: %r" % (info,))
    return dt, info


def run_transfer(ray, fn, mb, repeats, worker_pids, log):
    """Array made by one task, summarised by another -> "MB/s".  NOT comparable: on one
    host Ray keeps the array in shared memory and the consumer reads it in place, so the
    figure is a scheduling round trip divided into the size.  Ray cannot pin a task to
    one worker process of a node, so producer and consumer may even share a process."""
    _one_transfer(ray, fn, 1_000_000, -1.0)
    _settle()
    nbytes = int(mb * 1_000_000)
    runs = []
    for r in range(repeats):
        dt, info = _one_transfer(ray, fn, nbytes, float(r + 1))
        runs.append({"seconds": dt, "mb_per_s": nbytes / 1e6 / dt, "consumer_pid": info["pid"]})
        log("transfer run %d: %.0f MB in %.3f s = %.0f MB/s (shared memory, not comparable)"
            % (r + 1, nbytes / 1e6, dt, nbytes / 1e6 / dt))
        _settle()
    best = max(runs, key=lambda x: x["mb_per_s"])
    return {"mb": nbytes / 1e6, "mb_per_s": best["mb_per_s"], "seconds": best["seconds"],
            "median_mb_per_s": statistics.median(x["mb_per_s"] for x in runs),
            "worker_pids": worker_pids, "comparable": False, "note": TRANSFER_NOTE,
            "runs": runs}


def run(args, rec, log, selected):
    """Import Ray, start it, run the selected workloads, shut it down.  Exit code like
    bench.side: 0 if everything that exists on Ray succeeded (or Ray is not importable:
    status "unavailable"), else 1."""
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)

    def stage(text):
        rec.data["stage"] = text
        rec.flush()

    stage("import")
    try:
        t0 = time.perf_counter()
        import ray
        rec.data["versions"]["ray"] = ray.__version__
        rec.data["import_s"] = time.perf_counter() - t0
    except ImportError as e:
        rec.data.update(status="unavailable", stage="done",
                        error="ray not installed (%s: %s)" % (type(e).__name__, e))
        rec.flush()
        log(rec.data["error"])
        return 0

    rec.data["skipped"] = {w: "not implemented on ray" for w in selected if w not in IMPLEMENTED}
    temp_dir = tempfile.mkdtemp(prefix="bench-ray-")
    rec.data["ray_temp_dir"] = temp_dir  # removed by the parent too, if we get killed
    ok = True
    try:
        stage("cluster start")
        t0 = time.perf_counter()
        ray, pids = start(temp_dir)
        startup = time.perf_counter() - t0
        rec.data["startup_s"] = startup
        rec.data["worker_pids"] = pids
        rec.flush()
        log("ray with %d worker processes ready in %.2f s" % (len(pids), startup))
        try:
            fn = Remote(ray)
            base = random.randrange(1, 2**30) * 10**8
            jobs = {
                "map": lambda: run_map(ray, fn, base, args.n_map, args.repeat_map, log),
                "latency": lambda: run_latency(ray, fn, base, args.latency_rounds,
                                               args.latency_warmup, args.repeat_latency, log),
                "chain": lambda: run_chain(ray, fn, base, args.chain_length,
                                           args.repeat_chain, log),
                "transfer": lambda: run_transfer(ray, fn, args.transfer_mb,
                                                 args.repeat_transfer, pids, log),
            }
            ok = run_jobs(jobs, selected, rec, stage, log) and ok
        finally:
            stage("shutdown")
            t1 = time.perf_counter()
            ray.shutdown()
            rec.data["shutdown_s"] = time.perf_counter() - t1
    except BaseException as e:  # noqa: BLE001
        ok = False
        where = "cluster start" if "startup_s" not in rec.data else "run/shutdown"
        rec.data["error"] = "%s failed: %s: %s" % (where, type(e).__name__, e)
        rec.data["traceback"] = traceback.format_exc()
        log(rec.data["error"])
        try:
            import ray as _ray
            _ray.shutdown()
        except BaseException:  # noqa: BLE001 - best effort
            pass
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)

    rec.data["stage"] = "done"
    rec.data["status"] = "ok" if ok and rec.data["error"] is None else "error"
    rec.flush()
    return 0 if rec.data["status"] == "ok" else 1
