"""``python -m bench.scale``: how rdist's cost grows with graph size and worker count.

Graph size: ``--sizes`` no-op tasks via ``map`` + ``gather`` on 2 worker processes x 1
thread: time to submit, total time, tasks/s, peak RSS of the client, the scheduler, the
largest worker and Redis, and Redis' own ``used_memory`` at its peak; then the CPU time
(utime + stime) each kind of process spent meanwhile, summed over its processes -- the
dashboard (it follows the task stream; ``--no-dashboard`` leaves it out) and the nannies
counted apart from the workers.

Worker count: ``--workers`` worker processes x 1 thread, each running ``--n-scale``
no-op tasks and ``--n-sleep`` tasks that sleep ``--sleep-ms`` (the second shows how the
scheduler spreads work that does not need a CPU; this machine has few cores).

Each configuration runs on a fresh LocalCluster with an embedded Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

#: The processes of a run (see _roles): the dashboard and the nannies apart from the
#: workers (bench.workloads._PeakRSS counts both as workers).
ROLES = ("client", "scheduler", "worker", "redis", "dashboard", "nanny")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _redis_peak(url: str, stop: threading.Event, out: dict) -> None:
    import redis

    r = redis.Redis.from_url(url)
    while True:
        try:
            out["redis_used_mb"] = max(
                out.get("redis_used_mb", 0.0), r.info("memory")["used_memory"] / 1e6
            )
        except Exception:
            pass
        if stop.wait(0.25):
            return


def _role_of(cmd: str) -> str | None:
    """Which of ROLES a child process of ours is, from its command line."""
    if "redis-server" in cmd:
        return "redis"
    if " rdist dashboard" in cmd:
        return "dashboard"
    if " rdist nanny" in cmd or (" rdist worker" in cmd and "--nanny" in cmd.split()):
        return "nanny"
    if " scheduler" in cmd:
        return "scheduler"
    if "resource_tracker" in cmd:
        return None
    return "worker"


def _peak_rss(interval: float):
    """bench.workloads._PeakRSS, with the dashboard and the nannies told apart."""
    from bench.workloads import _PeakRSS

    class PeakRSS(_PeakRSS):
        def roles(self):
            me = self.psutil.Process()
            out = {"client": [me]}
            for child in me.children(recursive=True):
                try:
                    role = _role_of(" ".join(child.cmdline()))
                except self.psutil.Error:
                    continue
                if role is not None:
                    out.setdefault(role, []).append(child)
            return out

    return PeakRSS(interval=interval)


def _cpu_by_role(rss) -> dict[str, float]:
    """utime + stime (seconds) of every process of each role, summed, now."""
    out: dict[str, float] = {}
    for role, procs in rss.roles().items():
        for p in procs:
            try:
                t = p.cpu_times()
            except rss.psutil.Error:
                continue
            out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def run_size(n: int, workers: int = 2, dashboard: bool = True) -> dict:
    from bench import tasks
    from rdist import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            **({} if dashboard else {"dashboard_address": None}),
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(tasks.noop, range(-100, 0)))  # warm up
        stop, redis_mem = threading.Event(), {}
        watcher = threading.Thread(
            target=_redis_peak, args=(cluster.redis_url, stop, redis_mem), daemon=True
        )
        watcher.start()
        with _peak_rss(interval=0.5) as rss:
            cpu0 = _cpu_by_role(rss)
            t0 = time.perf_counter()
            futures = client.map(tasks.noop, range(n))
            submitted = time.perf_counter() - t0
            client.gather(futures)
            total = time.perf_counter() - t0
            cpu1 = _cpu_by_role(rss)
        stop.set()
        watcher.join()
        del futures
    return {
        "tasks": n,
        "workers": workers,
        "submit_s": submitted,
        "total_s": total,
        "tasks_per_s": n / total,
        "client_rss_mb": rss.mb("client"),
        "scheduler_rss_mb": rss.mb("scheduler"),
        "worker_rss_mb": rss.mb("worker"),
        "redis_rss_mb": rss.mb("redis"),
        "dashboard_rss_mb": rss.mb("dashboard"),
        **redis_mem,
        **{f"{role}_cpu_s": cpu1[role] - cpu0.get(role, 0.0) for role in cpu1},
    }


def run_workers(workers: int, n: int, n_sleep: int, sleep_ms: float) -> dict:
    from bench import tasks
    from rdist import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(tasks.noop, range(-100, 0)))
        t0 = time.perf_counter()
        client.gather(client.map(tasks.noop, range(n)))
        noop = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.gather(client.map(tasks.sleep, [sleep_ms / 1e3] * n_sleep, range(n_sleep)))
        slept = time.perf_counter() - t0
    ideal = n_sleep * sleep_ms / 1e3 / workers
    return {
        "workers": workers,
        "noop_tasks": n,
        "noop_tasks_per_s": n / noop,
        "sleep_tasks": n_sleep,
        "sleep_ms": sleep_ms,
        "sleep_s": slept,
        "sleep_ideal_s": ideal,
        "sleep_efficiency": ideal / slept,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument(
        "--sizes", default="10000,100000,1000000", help="graph sizes (no-op tasks), comma-separated"
    )
    p.add_argument("--workers", default="1,2,4,8", help="worker counts, comma-separated")
    p.add_argument("--n-scale", type=int, default=20_000, help="no-op tasks per worker count")
    p.add_argument("--n-sleep", type=int, default=400, help="sleeping tasks per worker count")
    p.add_argument("--sleep-ms", type=float, default=20.0)
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument(
        "--no-dashboard",
        action="store_true",
        help="graph size runs without the dashboard process (it follows the task stream)",
    )
    args = p.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    )
    sys.path.insert(0, ROOT)

    sizes = [int(x) for x in args.sizes.split(",") if x]
    counts = [int(x) for x in args.workers.split(",") if x]
    out: dict = {"cores": os.cpu_count(), "sizes": [], "workers": []}
    print("graph size (2 workers x 1 thread)")
    print(
        "%9s %9s %9s %9s %11s %11s %11s %11s %11s"
        % (
            "tasks",
            "submit s",
            "total s",
            "tasks/s",
            "client MB",
            "sched MB",
            "worker MB",
            "redis RSS",
            "redis used",
        )
    )
    for n in sizes:
        r = run_size(n, dashboard=not args.no_dashboard)
        out["sizes"].append(r)
        print(
            "%9d %9.2f %9.2f %9.0f %11.0f %11.0f %11.0f %11.0f %11.0f"
            % (
                n,
                r["submit_s"],
                r["total_s"],
                r["tasks_per_s"],
                r["client_rss_mb"],
                r["scheduler_rss_mb"],
                r["worker_rss_mb"],
                r["redis_rss_mb"],
                r.get("redis_used_mb", 0.0),
            ),
            flush=True,
        )
        print(
            "%9s CPU s (utime+stime): %s; dashboard RSS %.0f MB"
            % (
                "",
                ", ".join(f"{role} {r.get(role + '_cpu_s', 0.0):.1f}" for role in ROLES),
                r["dashboard_rss_mb"],
            ),
            flush=True,
        )
    print("\nworker count (1 thread each; %d cores here)" % (os.cpu_count() or 0))
    print("%8s %14s %16s %10s" % ("workers", "no-op tasks/s", "sleep tasks s", "efficiency"))
    for w in counts:
        r = run_workers(w, args.n_scale, args.n_sleep, args.sleep_ms)
        out["workers"].append(r)
        print(
            "%8d %14.0f %9.2f (%4.2f) %9.0f%%"
            % (
                w,
                r["noop_tasks_per_s"],
                r["sleep_s"],
                r["sleep_ideal_s"],
                100 * r["sleep_efficiency"],
            ),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
