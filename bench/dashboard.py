"""The dashboard against a million task records: its memory and each page's time.

    PYTHONPATH=. python -m bench.dashboard [--tasks 1000000] [--requests 20]

A real ``redis-server`` gets ``--tasks`` task records (mixed states, a few groups, two
clients, dependencies) and four worker records; ``rdist dashboard`` runs as its own
process, as in production. Once its census has swept every record, each endpoint is
requested ``--requests`` times; the table gives the median and the slowest, and the
dashboard process's resident memory after the sweep and at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.error
import urllib.request
from typing import Any

import psutil

from rdist.embedded import EmbeddedRedis
from rdist.protocol import wire
from rdist.store import connect
from rdist.web.serve import DashboardProcess

STATES = ("memory", "memory", "memory", "processing", "queued", "waiting", "erred")
GROUPS = ("load", "transform", "sum-partial", "finalize-hlgfinalizecompute")
ENDPOINTS = (
    "/api/status",
    "/api/workers",
    "/api/tasks",
    "/api/tasks?state=erred",
    "/api/tasks?q=transform-0000001",
    "/api/history",
    "/api/clients",
    "/api/graph",
    "/api/events",
    "/api/deadletters",
    "/",
    "/system",
)


def fill(url: str, cluster: str, n: int) -> None:
    store = connect(url, cluster)
    batch: dict[str, bytes] = {}
    for i in range(n):
        group = GROUPS[i % len(GROUPS)]
        state = STATES[i % len(STATES)]
        record = wire.TaskRecord(
            state,
            (0, i // 1000, i),
            deps=[f"load-{i - 1:07d}"] if group == "transform" and i else [],
            who_has=["tcp://10.0.0.1:4001"] if state == "memory" else [],
            nbytes=8_000 if state == "memory" else 0,
            who_wants=[f"client-{i % 2}"] if i % 10 == 0 else [],
            processing_on="tcp://10.0.0.2:4001" if state == "processing" else None,
        )
        batch[f"{group}-{i:07d}"] = record.encode()
        if len(batch) == 20_000:
            store.tasks.put_many(batch)
            batch = {}
    if batch:
        store.tasks.put_many(batch)
    for w in range(4):
        store.workers.put(
            wire.WorkerRecord(
                f"tcp://10.0.0.{w}:4001", f"w{w}", 4, 8 << 30, memory=1 << 30, last_seen=time.time()
            )
        )
    store.close()


def get(url: str) -> tuple[float, Any]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        body = response.read()
    elapsed = time.perf_counter() - started
    try:
        return elapsed, json.loads(body)
    except ValueError:
        return elapsed, None


def wait_for_sweep(link: str, n: int, timeout: float = 600) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        _, status = get(link + "api/status")
        tasks = status["tasks"]
        if tasks.get("complete") and tasks.get("counted", tasks.get("total")) == n:
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError("the census never finished its sweep")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    redis = EmbeddedRedis().start()
    cluster = "bench-dash"
    try:
        started = time.monotonic()
        fill(redis.url, cluster, args.tasks)
        print(f"{args.tasks:,} task records written in {time.monotonic() - started:.1f} s")
        dashboard = DashboardProcess(redis.url, cluster, ":0")
        try:
            link = dashboard.link
            assert link is not None
            process = psutil.Process(dashboard.process.pid)
            sweep = wait_for_sweep(link, args.tasks)
            print(f"first complete census sweep after {sweep:.1f} s")
            print(f"dashboard RSS after the sweep: {process.memory_info().rss / 1e6:.0f} MB")
            print(f"{'endpoint':34} {'median ms':>10} {'max ms':>8}")
            for path in ENDPOINTS:
                times = []
                try:
                    for _ in range(args.requests):
                        times.append(get(link + path.lstrip("/"))[0] * 1000)
                except urllib.error.HTTPError as exc:
                    print(f"{path:34} {'(' + str(exc.code) + ')':>10}")
                    continue
                print(f"{path:34} {statistics.median(times):10.1f} {max(times):8.1f}")
            print(f"dashboard RSS at the end: {process.memory_info().rss / 1e6:.0f} MB")
        finally:
            dashboard.stop()
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
