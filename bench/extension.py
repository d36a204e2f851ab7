"""``python -m bench.extension``: coordination primitives and actors, rdist beside
dask.distributed in one run (issue 13).

Each system gets a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``;
then, from separate client processes (spawned, each with a client of its own):

- ``lock``: two processes each acquire and release the same ``Lock`` in a loop for
  ``--seconds``; the figure is their pairs together per second (contended: every pair
  waits for the other process's release);
- ``queue``: one process ``put``s ``--n-queue`` small items into a ``Queue``, another
  ``get``s them; pairs per second from the start signal to the last ``get``;
- ``actor``: this process calls ``counter.increment().result()`` on an actor, 50 warm-up
  calls then ``--n-actor`` timed; median and p90 round trip in ms.

Ray (when importable) gets the actor figure only: the same ``Counter`` as a Ray actor in
a private, loopback-only ``ray.init(num_cpus=2)`` (see ``bench/ray_side.py``), timed as
``ray.get(counter.increment.remote())``. Ray has no Lock; its ``ray.util.queue.Queue`` is
an actor, not a comparable service, so those cells show "-". Without Ray the column is
left out (``--systems`` names the systems to run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

SYSTEMS = ("dask", "rdist", "ray")
OPTIONAL = ("ray",)  #: run by default only when importable


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n


def _connect(system: str, address: dict[str, str]) -> Any:
    if system == "dask":
        import distributed

        logging.getLogger("distributed").setLevel(logging.ERROR)
        return distributed, distributed.Client(address["scheduler"])  # type: ignore[no-untyped-call]
    import rdist

    return rdist, rdist.Client(address["redis_url"], cluster_name=address["cluster"])


def _lock_loop(system: str, address: dict[str, str], start: Any, seconds: float, out: Any) -> None:
    lib, client = _connect(system, address)
    lock = lib.Lock("bench-lock")
    lock.acquire()
    lock.release()  # warm
    start.wait()
    pairs, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        lock.acquire()
        lock.release()
        pairs += 1
    out.put(pairs)
    client.close()


def _queue_put(system: str, address: dict[str, str], start: Any, n: int, out: Any) -> None:
    lib, client = _connect(system, address)
    queue = lib.Queue("bench-queue")
    start.wait()
    for i in range(n):
        queue.put(i)
    out.put("put")
    client.close()


def _queue_get(system: str, address: dict[str, str], start: Any, n: int, out: Any) -> None:
    lib, client = _connect(system, address)
    queue = lib.Queue("bench-queue")
    start.wait()
    t0 = time.perf_counter()
    for _ in range(n):
        queue.get(timeout=60)
    out.put(time.perf_counter() - t0)
    client.close()


def _two(ctx: Any, targets: list[Any], args: tuple[Any, ...]) -> list[Any]:
    """Run the targets in processes of their own, release them together, their outputs."""
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=t, args=(*args[:2], start, *args[2:], out)) for t in targets]
    for p in procs:
        p.start()
    time.sleep(3.0)  # let both connect
    start.set()
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return results


def _time_calls(call: Any, n: int) -> dict[str, float]:
    """50 warm-up calls of ``call()``, then ``n`` timed: median and p90 in ms."""
    for _ in range(50):
        call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return {"actor_median_ms": statistics.median(times), "actor_p90_ms": times[int(n * 0.9)]}


def run_ray(args: argparse.Namespace) -> dict[str, Any]:
    """The actor round trip on Ray: the same ``Counter``, ``ray.get(actor.method.remote())``."""
    import shutil
    import tempfile

    from bench import ray_side

    for k, v in ray_side.QUIET_ENV.items():
        os.environ.setdefault(k, v)
    temp_dir = tempfile.mkdtemp(prefix="bench-ray-")
    start: Any = ray_side.start  # (bench/ray_side.py has no type hints)
    ray, _pids = start(temp_dir)
    try:
        counter = ray.remote(Counter).remote()
        return _time_calls(lambda: ray.get(counter.increment.remote()), args.n_actor)
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def run(system: str, args: argparse.Namespace) -> dict[str, Any]:
    if system == "ray":
        return run_ray(args)
    ctx = mp.get_context("spawn")
    cluster: Any
    client: Any
    if system == "dask":
        import distributed

        cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)  # type: ignore[no-untyped-call]
        address = {"scheduler": cluster.scheduler_address}
    else:
        import rdist

        cluster = rdist.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        client = rdist.Client(cluster)
        address = {"redis_url": cluster.redis_url, "cluster": cluster.cluster_name}
    try:
        figures: dict[str, Any] = {}
        pairs = _two(ctx, [_lock_loop, _lock_loop], (system, address, args.seconds))
        figures["lock_pairs_per_s"] = sum(pairs) / args.seconds
        outputs = _two(ctx, [_queue_put, _queue_get], (system, address, args.n_queue))
        elapsed = next(o for o in outputs if isinstance(o, float))
        figures["queue_pairs_per_s"] = args.n_queue / elapsed
        counter = client.submit(Counter, actor=True).result()
        figures.update(_time_calls(lambda: counter.increment().result(), args.n_actor))
        return figures
    finally:
        client.close()
        cluster.close()


def _available(system: str) -> bool:
    return system not in OPTIONAL or importlib.util.find_spec(system) is not None


def _cell(figures: dict[str, Any], key: str) -> str:
    return "%.2f" % figures[key] if key in figures else "-"


def _ratio(results: dict[str, dict[str, Any]], key: str, other: str) -> str:
    mine, theirs = results.get("rdist", {}).get(key), results.get(other, {}).get(key)
    return "-" if mine is None or theirs is None else "%.2f" % (mine / theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(s for s in SYSTEMS if _available(s)))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--n-queue", type=int, default=2000)
    parser.add_argument("--n-actor", type=int, default=500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {s: run(s, args) for s in args.systems.split(",")}
    rows = [
        ("lock_pairs_per_s", "Lock acquire+release pairs/s, 2 processes", "higher"),
        ("queue_pairs_per_s", "Queue put+get pairs/s, 2 processes", "higher"),
        ("actor_median_ms", "actor call round trip, median ms", "lower"),
        ("actor_p90_ms", "actor call round trip, p90 ms", "lower"),
    ]
    print("| figure | " + " | ".join(results) + " | rdist/dask | rdist/ray | better |")
    print("| --- |" + " --- |" * (len(results) + 3))
    for key, label, better in rows:
        cells = " | ".join(_cell(results[s], key) for s in results)
        ratios = " | ".join(_ratio(results, key, other) for other in ("dask", "ray"))
        print("| %s | %s | %s | %s |" % (label, cells, ratios, better))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
