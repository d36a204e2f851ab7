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

Ray is not measured here (not installed on the machine this was written on).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import statistics
import time
from typing import Any

SYSTEMS = ("dask", "rdist")


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
        return distributed, distributed.Client(address["scheduler"])
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


def run(system: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    if system == "dask":
        import distributed

        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster)
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
        for _ in range(50):
            counter.increment().result()
        times = []
        for _ in range(args.n_actor):
            t0 = time.perf_counter()
            counter.increment().result()
            times.append((time.perf_counter() - t0) * 1000)
        times.sort()
        figures["actor_median_ms"] = statistics.median(times)
        figures["actor_p90_ms"] = times[int(len(times) * 0.9)]
        return figures
    finally:
        client.close()
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS))
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
    print("| figure | " + " | ".join(results) + " | rdist/dask | better |")
    print("| --- |" + " --- |" * (len(results) + 2))
    for key, label, better in rows:
        values = [results[s][key] for s in results]
        ratio = (
            "%.2f" % (results["rdist"][key] / results["dask"][key])
            if {"rdist", "dask"} <= set(results)
            else "-"
        )
        print(
            "| %s | %s | %s | %s |" % (label, " | ".join("%.2f" % v for v in values), ratio, better)
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
