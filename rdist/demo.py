"""``rdist demo``: a real computation on an embedded local cluster, explained as it runs."""

from __future__ import annotations

import time


def square(x: int) -> int:
    return x * x


def total(values: list[int]) -> int:
    return sum(values)


def run_demo(n_workers: int = 2) -> None:
    from rdist import Client, LocalCluster

    started = time.perf_counter()
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1) as cluster,
        Client(cluster) as client,
    ):
        print(
            f"cluster up in {time.perf_counter() - started:.2f} s: "
            f"embedded Redis at {cluster.redis_url}"
        )
        print(f"workers: {', '.join(client.scheduler_info()['workers'])}")
        t0 = time.perf_counter()
        squares = client.map(square, range(1000))
        result = client.submit(total, squares).result()
        elapsed = time.perf_counter() - t0
        print(
            f"sum of squares of 0..999 = {result} (expected {sum(x * x for x in range(1000))}) "
            f"in {elapsed * 1000:.0f} ms over 1001 tasks"
        )
        where = client.who_has(squares[:4])
        for key, holders in where.items():
            print(f"  {key} held by {holders}")
        assert result == sum(x * x for x in range(1000))
    print("demo finished: OK")
