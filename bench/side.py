"""Run every selected workload on ONE system, in its own process.

Invoked by ``python -m bench`` as
``python -m bench.side --system rdist|dask|ray --out FILE [options]``
(``ray`` is handed over to ``bench.ray_side``, which has no LocalCluster/Client).
Results are (re)written to FILE as JSON after every step, so the parent still
gets partial results if this process crashes or has to be killed.
Exit code: 0 if the cluster started and every workload succeeded, else 1.
"""

import argparse
import json
import logging
import os
import platform
import random
import sys
import time
import traceback
import warnings

WORKLOADS = (
    "map",
    "latency",
    "chain",
    "transfer",
    "array",
    "many",
    "transfers",
    "rss",
    "shuffle",
    "groupby",
    "rechunk",
    "wide",
    "wide_array",
    "wide_pair",
)
#: run unless --workloads says otherwise ("many" and "rss" take minutes on dask: opt in)
DEFAULT_WORKLOADS = ("map", "latency", "chain", "transfer", "array", "transfers")
N_WORKERS = 2
THREADS_PER_WORKER = 1


def _log(system):
    def log(msg):
        print("[%s] %s" % (system, msg), flush=True)

    return log


def _load_system(name):
    """Return (Client class, cluster factory, wait function or None, versions)."""
    if name == "dask":
        import dask
        import distributed

        for logger in ("distributed", "tornado", "asyncio"):
            logging.getLogger(logger).setLevel(logging.ERROR)
        # e.g. "Port 8787 is already in use" when another dask runs nearby.
        warnings.filterwarnings("ignore", message="Port .* is already in use")

        def make_cluster():
            return distributed.LocalCluster(
                n_workers=N_WORKERS,
                threads_per_worker=THREADS_PER_WORKER,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )

        versions = {"dask": dask.__version__, "distributed": distributed.__version__}
        return distributed.Client, make_cluster, distributed.wait, versions

    if name == "rdist":
        import rdist

        missing = [a for a in ("Client", "LocalCluster") if not hasattr(rdist, a)]
        if missing:
            where = getattr(rdist, "__file__", None) or sorted(set(getattr(rdist, "__path__", [])))
            raise ImportError("rdist (from %s) has no %s" % (where, ", ".join(missing)))

        def make_cluster():
            return rdist.LocalCluster(  # nannies on, dashboard off: as dask's above
                n_workers=N_WORKERS,
                threads_per_worker=THREADS_PER_WORKER,
                processes=True,
                dashboard_address=None,
            )

        versions = {
            "rdist": str(getattr(rdist, "__version__", "unknown")),
            "rdist_path": str(getattr(rdist, "__file__", None)),
        }
        return rdist.Client, make_cluster, getattr(rdist, "wait", None), versions

    raise ValueError("unknown system %r" % name)


class Recorder:
    def __init__(self, path, system):
        self.path = path
        self.data = {
            "system": system,
            "status": "running",
            "error": None,
            "versions": {"python": platform.python_version()},
            "workloads": {},
        }
        self.flush()

    def flush(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=2)
        os.replace(tmp, self.path)


def run_jobs(jobs, selected, rec, stage, log):
    """Run each selected workload the system has, recording its result (or its failure:
    the others still run); False if any failed."""
    ok = True
    for name in selected:
        if name not in jobs:
            continue
        stage("workload " + name)
        t1 = time.perf_counter()
        try:
            res = jobs[name]()
            res["ok"] = True
        except Exception as e:  # keep going with the other workloads
            ok = False
            res = {
                "ok": False,
                "error": "%s: %s" % (type(e).__name__, e),
                "traceback": traceback.format_exc(),
            }
            log("%s FAILED: %s" % (name, res["error"]))
        res["wall_s"] = time.perf_counter() - t1
        rec.data["workloads"][name] = res
        rec.flush()
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.side")
    p.add_argument("--system", required=True, choices=("rdist", "dask", "ray"))
    p.add_argument("--out", required=True)
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--n-map", type=int, default=10_000)
    p.add_argument("--latency-rounds", type=int, default=300)
    p.add_argument("--latency-warmup", type=int, default=20)
    p.add_argument("--chain-length", type=int, default=1000)
    p.add_argument("--transfer-mb", type=float, default=200.0)
    p.add_argument(
        "--transfer-raw",
        choices=("none", "tcp", "unix"),
        default="none",
        help="before each timed transfer, time a raw socket of this kind (bench.raw)",
    )
    p.add_argument("--array-size", type=int, default=4000)
    p.add_argument("--array-chunk", type=int, default=250)
    p.add_argument("--n-many", type=int, default=100_000)
    p.add_argument("--repeat-array", type=int, default=1)
    p.add_argument("--repeat-many", type=int, default=1)
    p.add_argument("--repeat-map", type=int, default=1)
    p.add_argument("--repeat-latency", type=int, default=1)
    p.add_argument("--repeat-chain", type=int, default=1)
    p.add_argument("--repeat-transfer", type=int, default=3)
    p.add_argument("--n-transfers", type=int, default=500)
    p.add_argument("--transfers-mb", type=float, default=1.0)
    p.add_argument("--n-rss", type=int, default=100_000)
    p.add_argument("--repeat-transfers", type=int, default=3)
    p.add_argument("--repeat-rss", type=int, default=1)
    p.add_argument("--df-partitions", type=int, default=100)
    p.add_argument("--df-rows", type=int, default=400_000)
    p.add_argument("--rechunk-size", type=int, default=10_000)
    p.add_argument("--repeat-shuffle", type=int, default=1)
    p.add_argument("--repeat-groupby", type=int, default=1)
    p.add_argument("--repeat-rechunk", type=int, default=1)
    p.add_argument("--wide-n", type=int, default=2000)
    p.add_argument("--wide-mb", type=float, default=10.0)
    p.add_argument("--wide-array-size", type=int, default=20_000)
    p.add_argument("--repeat-wide", type=int, default=1)
    p.add_argument("--repeat-wide_array", type=int, default=1)
    p.add_argument("--repeat-wide_pair", type=int, default=1)
    args = p.parse_args(argv)

    # Worker processes must be able to ``import bench.tasks``.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root] + paths)
    if root not in sys.path:
        sys.path.insert(0, root)

    from . import data, memory
    from . import dataplane as dp
    from . import workloads as wl

    system = args.system
    log = _log(system)
    rec = Recorder(args.out, system)
    selected = [w for w in args.workloads.split(",") if w]

    if system == "ray":
        from . import ray_side

        return ray_side.run(args, rec, log, selected)

    def stage(text):
        rec.data["stage"] = text
        rec.flush()

    stage("import")
    try:
        t0 = time.perf_counter()
        Client, make_cluster, wait, versions = _load_system(system)
        rec.data["versions"].update(versions)
        rec.data["import_s"] = time.perf_counter() - t0
    except BaseException as e:  # noqa: BLE001 - report anything, incl. SystemExit
        rec.data.update(
            status="error",
            error="import failed: %s: %s" % (type(e).__name__, e),
            traceback=traceback.format_exc(),
        )
        rec.flush()
        log(rec.data["error"])
        return 1

    ok = True
    try:
        stage("cluster start")
        t0 = time.perf_counter()
        with make_cluster() as cluster:
            with Client(cluster) as client:
                client.wait_for_workers(N_WORKERS)
                startup = time.perf_counter() - t0
                rec.data["startup_s"] = startup
                rec.flush()
                log("cluster with %d workers ready in %.2f s" % (N_WORKERS, startup))
                idle = dp.worker_rss(client) if "rss" in selected else {}

                env = wl.Env(
                    client=client, wait=wait, base=random.randrange(1, 2**30) * 10**8, log=log
                )
                jobs = {
                    "map": lambda: wl.run_map(env, args.n_map, args.repeat_map),
                    "latency": lambda: wl.run_latency(
                        env, args.latency_rounds, args.latency_warmup, args.repeat_latency
                    ),
                    "chain": lambda: wl.run_chain(env, args.chain_length, args.repeat_chain),
                    "transfer": lambda: wl.run_transfer(
                        env, args.transfer_mb, args.repeat_transfer, args.transfer_raw
                    ),
                    "array": lambda: wl.run_array(
                        env, args.array_size, args.array_chunk, args.repeat_array
                    ),
                    "many": lambda: wl.run_many(env, args.n_many, args.repeat_many),
                    "transfers": lambda: dp.run_transfers(
                        env, args.n_transfers, args.transfers_mb, args.repeat_transfers
                    ),
                    "rss": lambda: dp.run_rss(env, args.n_rss, idle),
                    "shuffle": lambda: data.run_shuffle(
                        env, system, args.df_partitions, args.df_rows, args.repeat_shuffle
                    ),
                    "groupby": lambda: data.run_groupby_merge(
                        env, system, args.df_partitions, args.df_rows, args.repeat_groupby
                    ),
                    "rechunk": lambda: data.run_rechunk(
                        env, system, args.rechunk_size, args.repeat_rechunk
                    ),
                    "wide": lambda: memory.run_wide(
                        env, args.wide_n, args.wide_mb, args.repeat_wide
                    ),
                    "wide_array": lambda: memory.run_wide_array(
                        env, args.wide_array_size, args.repeat_wide_array
                    ),
                    "wide_pair": lambda: memory.run_wide_array(
                        env, args.wide_array_size, args.repeat_wide_pair, pair=True
                    ),
                }
                ok = run_jobs(jobs, selected, rec, stage, log) and ok
                stage("shutdown")
                t1 = time.perf_counter()
        rec.data["shutdown_s"] = time.perf_counter() - t1
    except BaseException as e:  # noqa: BLE001
        ok = False
        where = "cluster start" if "startup_s" not in rec.data else "run/shutdown"
        rec.data["error"] = "%s failed: %s: %s" % (where, type(e).__name__, e)
        rec.data["traceback"] = traceback.format_exc()
        log(rec.data["error"])

    rec.data["stage"] = "done"
    rec.data["status"] = "ok" if ok and rec.data["error"] is None else "error"
    rec.flush()
    return 0 if rec.data["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
