"""The four workloads.  Each function takes an ``Env`` and returns a dict.

The code is identical for both systems: it only uses the dask.distributed
futures API (``submit``, ``map``, ``gather``, ``Future.result``/``done``,
``scheduler_info``), which rdist mirrors.
"""

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import tasks

perf_counter = time.perf_counter

# Pause after releasing many futures so asynchronous clean-up of one step does
# not bleed into the timing of the next.
SETTLE_S = 0.5


class ClientOps:
    """How the task workloads (map, latency, chain) submit and collect, through the
    dask.distributed futures API that rdist mirrors; bench.ray_side has Ray's."""

    def __init__(self, client):
        self.client = client

    def map_noop(self, args):
        return self.client.map(tasks.noop, args)

    def gather(self, handles):
        return self.client.gather(handles)

    def submit_inc(self, x):
        return self.client.submit(tasks.inc, x)

    def result(self, handle):
        return handle.result()


@dataclass
class Env:
    client: Any
    wait: Callable | None  # the system's ``wait(futures)``, if it has one
    base: int  # per-run random offset so task arguments never repeat
    log: Callable[[str], None]
    ops: Any = None  #: submit/collect for map, latency, chain (default: through ``client``)

    def __post_init__(self):
        if self.ops is None:
            self.ops = ClientOps(self.client)


def _settle():
    time.sleep(SETTLE_S)


def _wait_done(env, future, timeout=300.0):
    """Block until ``future`` is finished without fetching its result."""
    if env.wait is not None:
        env.wait([future])
        return
    deadline = perf_counter() + timeout
    while not future.done():
        if perf_counter() > deadline:
            raise TimeoutError("future did not finish in %.0f s" % timeout)
        time.sleep(0.0005)


def _percentile(samples, q):
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    s = sorted(samples)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def run_map(env, n, repeats):
    """``client.map(noop, <n args>)`` + ``client.gather`` -> tasks/s."""
    ops = env.ops
    warm = ops.map_noop(range(env.base - 200, env.base))
    ops.gather(warm)
    del warm
    _settle()

    runs = []
    for r in range(repeats):
        start = env.base + r * n
        t0 = perf_counter()
        futures = ops.map_noop(range(start, start + n))
        out = ops.gather(futures)
        dt = perf_counter() - t0
        if len(out) != n:
            raise AssertionError("gather returned %d results, expected %d" % (len(out), n))
        del futures, out
        runs.append({"seconds": dt, "tasks_per_s": n / dt})
        env.log("map run %d: %d tasks in %.3f s = %.0f tasks/s" % (r + 1, n, dt, n / dt))
        _settle()
    best = max(runs, key=lambda x: x["tasks_per_s"])
    return {
        "n": n,
        "tasks_per_s": best["tasks_per_s"],
        "seconds": best["seconds"],
        "median_tasks_per_s": statistics.median(x["tasks_per_s"] for x in runs),
        "runs": runs,
    }


def run_latency(env, rounds, warmup, repeats):
    """Sequential ``submit(inc, x).result()`` round trips -> ms."""
    ops = env.ops
    arg = env.base + 10_000_000  # distinct from the other workloads' arguments
    for _ in range(warmup):
        if ops.result(ops.submit_inc(arg)) != arg + 1:
            raise AssertionError("wrong result during warm-up")
        arg += 1

    runs = []
    for r in range(repeats):
        samples = []
        for _ in range(rounds):
            t0 = perf_counter()
            v = ops.result(ops.submit_inc(arg))
            samples.append((perf_counter() - t0) * 1e3)
            if v != arg + 1:
                raise AssertionError("inc(%d) returned %r" % (arg, v))
            arg += 1
        run = {
            "median_ms": statistics.median(samples),
            "p90_ms": _percentile(samples, 90),
            "p99_ms": _percentile(samples, 99),
            "min_ms": min(samples),
            "mean_ms": statistics.fmean(samples),
        }
        runs.append(run)
        env.log(
            "latency run %d: %d round trips, median %.3f ms, p90 %.3f ms"
            % (r + 1, rounds, run["median_ms"], run["p90_ms"])
        )
    best = min(runs, key=lambda x: x["median_ms"])
    return dict(
        best,
        rounds=rounds,
        warmup=warmup,
        runs=runs,
        median_of_medians_ms=statistics.median(x["median_ms"] for x in runs),
    )


def run_chain(env, length, repeats):
    """``x = submit(inc, x)`` ``length`` times, then ``x.result()`` -> tasks/s."""
    ops = env.ops
    # Warm-up: a short chain so dependency handling is exercised once.
    x = ops.submit_inc(env.base + 20_000_000)
    for _ in range(9):
        x = ops.submit_inc(x)
    ops.result(x)
    del x
    _settle()

    runs = []
    for r in range(repeats):
        start = env.base + 30_000_000 + r * 1_000_000
        t0 = perf_counter()
        x = ops.submit_inc(start)
        for _ in range(length - 1):
            x = ops.submit_inc(x)
        v = ops.result(x)
        dt = perf_counter() - t0
        if v != start + length:
            raise AssertionError("chain result %r, expected %d" % (v, start + length))
        del x
        runs.append({"seconds": dt, "tasks_per_s": length / dt})
        env.log(
            "chain run %d: %d tasks in %.3f s = %.0f tasks/s" % (r + 1, length, dt, length / dt)
        )
        _settle()
    best = max(runs, key=lambda x: x["tasks_per_s"])
    return {
        "length": length,
        "tasks_per_s": best["tasks_per_s"],
        "seconds": best["seconds"],
        "median_tasks_per_s": statistics.median(x["tasks_per_s"] for x in runs),
        "verified": True,
        "runs": runs,
    }


def _one_transfer(env, nbytes, fill, w0, w1):
    """Seconds of one transfer, the consumer's report, and the CPU seconds each worker
    spent from just before the consumer was submitted to its result (``client.run``
    around the timed window: steadier than wall time on a loaded machine)."""
    client = env.client
    a = client.submit(tasks.make_array, nbytes, fill, workers=[w0], pure=False)
    _wait_done(env, a)
    cpu0 = client.run(tasks.cpu_seconds, workers=[w0, w1])
    t0 = perf_counter()
    b = client.submit(tasks.consume, a, workers=[w1], pure=False)
    info = b.result()
    dt = perf_counter() - t0
    cpu1 = client.run(tasks.cpu_seconds, workers=[w0, w1])
    del a, b
    expected = (nbytes // 8) * 8
    if info["nbytes"] != expected or info["first"] != fill or info["last"] != fill:
        raise AssertionError("consumer saw wrong data: %r" % (info,))
    info["cpu"] = {w: cpu1[w] - cpu0[w] for w in (w0, w1)}
    return dt, info


def run_transfer(env, mb, repeats, raw_kind="none"):
    """Array made on worker 0, consumed on worker 1 -> MB/s (1 MB = 1e6 bytes).

    With ``raw_kind`` (``tcp``/``unix``), a raw socket moves the same bytes between two
    processes (``bench.raw``, one timed round after a warm-up) right before each timed
    transfer: on a machine whose load swings, each pair's ratio compares like with like
    (one sample against one: a best of two against a single transfer favoured the raw
    socket)."""
    client = env.client
    workers = list(client.scheduler_info()["workers"])
    if len(workers) < 2:
        raise RuntimeError("need 2 workers, scheduler reports %r" % (workers,))
    w0, w1 = workers[0], workers[1]
    pid0 = client.submit(tasks.worker_pid, env.base + 1, workers=[w0], pure=False).result()
    pid1 = client.submit(tasks.worker_pid, env.base + 2, workers=[w1], pure=False).result()
    if pid0 == pid1:
        raise AssertionError("both worker addresses run in process %d" % pid0)

    # Warm-up: 1 MB so connections between the workers exist and numpy is loaded.
    _one_transfer(env, 1_000_000, -1.0, w0, w1)
    _settle()

    nbytes = int(mb * 1_000_000)
    runs = []
    for r in range(repeats):
        raw = None
        if raw_kind != "none":
            from . import raw as rawsock

            raw = rawsock.measure(mb, rounds=2, kind=raw_kind)["mb_per_s"]
            _settle()
        dt, info = _one_transfer(env, nbytes, float(r + 1), w0, w1)
        if info["pid"] != pid1:
            raise AssertionError(
                "consumer ran in pid %d, expected worker 1 (pid %d)" % (info["pid"], pid1)
            )
        cpu = info["cpu"]
        runs.append(
            {
                "seconds": dt,
                "mb_per_s": nbytes / 1e6 / dt,
                "sender_cpu_s": cpu[w0],
                "receiver_cpu_s": cpu[w1],
                "raw_mb_per_s": raw,
            }
        )
        if raw:
            env.log("  raw %s socket just before: %.0f MB/s" % (raw_kind, raw))
        env.log(
            "transfer run %d: %.0f MB in %.3f s = %.0f MB/s (worker CPU: sender %.0f ms, "
            "receiver %.0f ms)"
            % (r + 1, nbytes / 1e6, dt, nbytes / 1e6 / dt, cpu[w0] * 1e3, cpu[w1] * 1e3)
        )
        _settle()
    best = max(runs, key=lambda x: x["mb_per_s"])
    return {
        "mb": nbytes / 1e6,
        "mb_per_s": best["mb_per_s"],
        "seconds": best["seconds"],
        "median_mb_per_s": statistics.median(x["mb_per_s"] for x in runs),
        "median_sender_cpu_s": statistics.median(x["sender_cpu_s"] for x in runs),
        "median_receiver_cpu_s": statistics.median(x["receiver_cpu_s"] for x in runs),
        "paired_ratio": (
            statistics.median(x["mb_per_s"] / x["raw_mb_per_s"] for x in runs)
            if raw_kind != "none"
            else None
        ),
        "workers": [w0, w1],
        "worker_pids": [pid0, pid1],
        "runs": runs,
    }


def run_array(env, size, chunk, repeats):
    """``(x + x.T).mean(axis=0).sum()`` on a ``size``² dask.array of ``chunk``² chunks,
    through ``client.compute`` (the same call on both systems) -> seconds."""
    import dask.array as da
    import numpy as np

    client = env.client
    runs = []
    for r in range(repeats + 1):  # the first run warms imports and connections
        x = da.random.RandomState(r).random_sample((size, size), chunks=(chunk, chunk))
        y = (x + x.T).mean(axis=0).sum()
        ntasks = len(y.__dask_graph__())
        t0 = perf_counter()
        value = client.compute(y).result()
        dt = perf_counter() - t0
        expected = y.compute(scheduler="threads") if r == 0 else None
        if expected is not None and not np.isclose(value, expected):
            raise AssertionError("array result %r, expected %r" % (value, expected))
        if r:
            runs.append({"seconds": dt, "tasks": ntasks})
            env.log("array run %d: %d tasks in %.3f s" % (r, ntasks, dt))
        _settle()
    best = min(runs, key=lambda x: x["seconds"])
    return {
        "size": size,
        "chunk": chunk,
        "seconds": best["seconds"],
        "tasks": best["tasks"],
        "median_seconds": statistics.median(x["seconds"] for x in runs),
        "runs": runs,
    }


class _PeakRSS:
    """Samples the RSS of this process and of its child processes (by role) meanwhile."""

    def __init__(self, interval=0.2):
        import threading

        import psutil

        self.psutil = psutil
        self.peak = {}
        self.stop = threading.Event()
        self.interval = interval
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def roles(self):
        me = self.psutil.Process()
        out = {"client": [me]}
        for child in me.children(recursive=True):
            try:
                cmd = " ".join(child.cmdline())
            except self.psutil.Error:
                continue
            if "redis-server" in cmd or child.name().startswith("redis"):
                out.setdefault("redis", []).append(child)
            elif " scheduler" in cmd:
                out.setdefault("scheduler", []).append(child)
            elif "resource_tracker" in cmd or " rdist nanny" in cmd:
                continue
            else:
                out.setdefault("worker", []).append(child)
        return out

    def sample(self):
        for role, procs in self.roles().items():
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except self.psutil.Error:
                    continue
                key = (role, p.pid)
                self.peak[key] = max(self.peak.get(key, 0), rss)

    def _loop(self):
        while not self.stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sample()

    def mb(self, role, how=max):
        values = [v for (r, _), v in self.peak.items() if r == role]
        return how(values) / 1e6 if values else 0.0


def run_many(env, n, repeats):
    """``n`` no-op tasks via map + gather: time and peak RSS of each process role.

    "scheduler+client" is the client process plus, for rdist, its scheduler process (dask
    runs its scheduler inside the client's process); "worker" is the largest worker."""
    client = env.client
    runs = []
    for r in range(repeats):
        start = env.base + 50_000_000 + r * n
        with _PeakRSS() as rss:
            t0 = perf_counter()
            futures = client.map(tasks.noop, range(start, start + n))
            submitted = perf_counter() - t0
            out = client.gather(futures)
            dt = perf_counter() - t0
        if len(out) != n:
            raise AssertionError("gather returned %d results, expected %d" % (len(out), n))
        del futures, out
        run = {
            "seconds": dt,
            "submit_seconds": submitted,
            "tasks_per_s": n / dt,
            "client_rss_mb": rss.mb("client"),
            "scheduler_rss_mb": rss.mb("scheduler"),
            "scheduler_client_rss_mb": rss.mb("client") + rss.mb("scheduler"),
            "worker_rss_mb": rss.mb("worker"),
            "redis_rss_mb": rss.mb("redis"),
        }
        runs.append(run)
        env.log(
            "many run %d: %d tasks in %.1f s (submit %.1f s); RSS MB: client %.0f, "
            "scheduler %.0f, worker (max) %.0f, redis %.0f"
            % (
                r + 1,
                n,
                dt,
                submitted,
                run["client_rss_mb"],
                run["scheduler_rss_mb"],
                run["worker_rss_mb"],
                run["redis_rss_mb"],
            )
        )
        _settle()
    best = min(runs, key=lambda x: x["seconds"])
    return dict(best, n=n, runs=runs)
