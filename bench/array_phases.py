"""Where the array workload's time goes on rdist: phases, CPU per process, the workers'
task stream.

``python -m bench.array_phases [--runs 6] [--size 4000] [--chunk 250]`` starts the bench's
cluster (2 worker processes x 1 thread, TCP between workers) and runs
``client.compute((x + x.T).mean(axis=0).sum())`` ``--runs`` times after a warm-up. Per run:

- ``submit``: the ``client.compute`` call (dask's optimisation, the graph's conversion,
  ``dask.order``, the send) and ``result``: from there to the value;
- the CPU seconds of each process meanwhile (utime + stime from ``/proc/<pid>/stat``:
  steadier than wall time on a loaded machine);
- from the task stream: when the first task started and the last ended (after the
  ``compute`` call began), per worker the seconds computing, the idle gaps longer than
  2 ms between two tasks, and the chunks fetched from the other worker (count and MB).

The medians of the runs after the warm-up close the output. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import time
from typing import Any

GAP_S = 0.002  #: idle time between two tasks of a worker counted as a gap


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes() -> list[tuple[str, int]]:
    """(role, pid) of this process and of the cluster's (nannies left out)."""
    import psutil

    out = [("client", os.getpid())]
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "redis" in cmd:
            out.append(("redis", child.pid))
        elif " scheduler" in cmd:
            out.append(("scheduler", child.pid))
        elif " worker" in cmd and "--nanny-fd" in cmd:  # the worker a nanny runs
            out.append(("worker", child.pid))
    return out


def stream_figures(records: list[dict[str, Any]], t0: float) -> dict[str, Any]:
    """First start and last stop (seconds after ``t0``), and per worker: compute seconds,
    idle gaps, transfers and MB fetched."""
    per: dict[str, dict[str, Any]] = collections.defaultdict(
        lambda: {"compute_s": 0.0, "tasks": 0, "transfers": 0, "mb": 0.0, "runs": []}
    )
    for record in records:
        worker = per[record["worker"]]
        for ss in record["startstops"]:
            if ss["action"] == "compute":
                worker["compute_s"] += ss["stop"] - ss["start"]
                worker["tasks"] += 1
                worker["runs"].append((ss["start"], ss["stop"]))
            elif ss["action"] == "transfer":
                worker["transfers"] += 1
                worker["mb"] += record["nbytes"] / 1e6
    starts = [a for w in per.values() for a, _ in w["runs"]]
    stops = [b for w in per.values() for _, b in w["runs"]]
    for w in per.values():
        runs = sorted(w.pop("runs"))
        gaps = [b0 - a1 for (_, a1), (b0, _) in zip(runs, runs[1:]) if b0 - a1 > GAP_S]
        w["gaps"], w["gap_s"] = len(gaps), sum(gaps)
    return {
        "first_start": min(starts) - t0 if starts else None,
        "last_stop": max(stops) - t0 if stops else None,
        "workers": dict(per),
    }


def one_run(client: Any, procs: list[tuple[str, int]], seed: int, size: int, chunk: int) -> Any:
    import dask.array as da

    x = da.random.RandomState(seed).random_sample((size, size), chunks=(chunk, chunk))
    y = (x + x.T).mean(axis=0).sum()
    time.sleep(0.3)  # the previous run's reports settle
    before = {pid: cpu_seconds(pid) for _, pid in procs}
    epoch0, t0 = time.time(), time.perf_counter()
    future = client.compute(y)
    t1 = time.perf_counter()
    future.result()
    t2 = time.perf_counter()
    cpu: dict[str, float] = collections.defaultdict(float)
    for role, pid in procs:
        cpu[role] += cpu_seconds(pid) - before[pid]
    time.sleep(0.5)  # task-stream entries travel with the workers' next reports
    records = client.get_task_stream(start=epoch0 - 0.01, stop=time.time())
    return {"submit_s": t1 - t0, "result_s": t2 - t1, "total_s": t2 - t0, "cpu": dict(cpu)} | {
        "stream": stream_figures(records, epoch0)
    }


def show(i: int, run: dict[str, Any]) -> None:
    cpu = " ".join(f"{role} {s:.2f}" for role, s in sorted(run["cpu"].items()))
    stream = run["stream"]
    print(
        f"run {i}: submit {run['submit_s']:.3f} s  result {run['result_s']:.3f} s  "
        f"total {run['total_s']:.3f} s  | CPU s: {cpu}  | first task at "
        f"{stream['first_start'] or 0:.3f} s, last ends {stream['last_stop'] or 0:.3f} s"
    )
    for address, w in sorted(stream["workers"].items()):
        print(
            f"    {address}: {w['tasks']} tasks, computing {w['compute_s']:.3f} s, "
            f"{w['gaps']} idle gaps {w['gap_s']:.3f} s, {w['transfers']} transfers "
            f"{w['mb']:.1f} MB"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.array_phases")
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--size", type=int, default=4000)
    p.add_argument("--chunk", type=int, default=250)
    args = p.parse_args(argv)
    os.environ.setdefault("RDIST_UNIX_SOCKETS", "0")  # TCP between workers, as the bench
    import rdist

    with (
        rdist.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        rdist.Client(cluster) as client,
    ):
        time.sleep(0.5)
        procs = processes()
        runs = []
        for i in range(args.runs + 1):
            run = one_run(client, procs, i, args.size, args.chunk)
            show(i, run)
            if i:  # the first warms imports, connections and duration estimates
                runs.append(run)
    med = statistics.median
    cpu = ", ".join(
        f"{role} {med(r['cpu'].get(role, 0.0) for r in runs):.3f}"
        for role in ("client", "scheduler", "redis", "worker")
    )
    moved = [list(r["stream"]["workers"].values()) for r in runs]
    print(
        f"medians of {len(runs)} runs: total {med(r['total_s'] for r in runs):.3f} s, "
        f"submit {med(r['submit_s'] for r in runs):.3f} s, CPU s {cpu}, transfers "
        f"{med(sum(w['transfers'] for w in ws) for ws in moved)} "
        f"({med(sum(w['mb'] for w in ws) for ws in moved):.1f} MB); "
        f"load {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
