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
from . import workloads as wl
from .side import run_jobs
from .workloads import _settle

perf_counter = time.perf_counter

N_CPUS = 2
IMPLEMENTED = ("map", "latency", "chain", "transfer")
#: the value written as "comparable": False into the transfer result (and the table)
TRANSFER_NOTE = (
    "one host's shared-memory object store: the consumer maps the producer's "
    "array without copying it, and Ray picks the worker processes itself"
)

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


class RayOps:
    """Submit and collect for bench.workloads' map, latency and chain, the Ray way:
    ``f.remote(...)`` returns an object ref (refs as arguments become dependencies),
    ``ray.get`` waits for values."""

    def __init__(self, ray, fn):
        self.ray = ray
        self.fn = fn

    def map_noop(self, args):
        return [self.fn.noop.remote(i) for i in args]

    def gather(self, handles):
        return self.ray.get(handles)

    def submit_inc(self, x):
        return self.fn.inc.remote(x)

    def result(self, handle):
        return self.ray.get(handle)


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
        log(
            "transfer run %d: %.0f MB in %.3f s = %.0f MB/s (shared memory, not comparable)"
            % (r + 1, nbytes / 1e6, dt, nbytes / 1e6 / dt)
        )
        _settle()
    best = max(runs, key=lambda x: x["mb_per_s"])
    return {
        "mb": nbytes / 1e6,
        "mb_per_s": best["mb_per_s"],
        "seconds": best["seconds"],
        "median_mb_per_s": statistics.median(x["mb_per_s"] for x in runs),
        "worker_pids": worker_pids,
        "comparable": False,
        "note": TRANSFER_NOTE,
        "runs": runs,
    }


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
        rec.data.update(
            status="unavailable",
            stage="done",
            error="ray not installed (%s: %s)" % (type(e).__name__, e),
        )
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
            env = wl.Env(client=None, wait=None, base=base, log=log, ops=RayOps(ray, fn))
            jobs = {
                "map": lambda: wl.run_map(env, args.n_map, args.repeat_map),
                "latency": lambda: wl.run_latency(
                    env, args.latency_rounds, args.latency_warmup, args.repeat_latency
                ),
                "chain": lambda: wl.run_chain(env, args.chain_length, args.repeat_chain),
                "transfer": lambda: run_transfer(
                    ray, fn, args.transfer_mb, args.repeat_transfer, pids, log
                ),
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
