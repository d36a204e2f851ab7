"""Retiring workers and adapting a real LocalCluster (processes, nannies, real Redis):
data moves before a worker leaves, its nanny does not bring it back, and ``adapt()``
grows and shrinks the cluster under a bursty load without losing a result."""

from __future__ import annotations

import time
import uuid

import pytest

from rdist import Client, LocalCluster
from tests.client_helpers import wait_until

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]

#: bytes past the size kept in Redis: such a result lives on its worker only
LARGE = 200_000


def large(i: int) -> bytes:
    return bytes([i % 256]) * LARGE


def slow(i: int, seconds: float = 0.3) -> int:
    time.sleep(seconds)
    return i * 2


def _cluster(redis_url: str, n: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        redis_url=redis_url,
        name=f"retire-{uuid.uuid4().hex[:8]}",
        dashboard_address=None,
        timeout=60,
    )


def test_retired_worker_under_a_nanny_hands_its_data_over_and_stays_gone(redis_url) -> None:
    with _cluster(redis_url, 3) as cluster, Client(cluster) as client:
        futures = client.map(large, range(9))
        client.gather(futures)
        victim = sorted(client.scheduler_info()["workers"])[0]
        only_there = [k for k, ws in client.who_has(futures).items() if ws == [victim]]
        assert only_there

        retired = client.retire_workers([victim])

        assert list(retired) == [victim]
        assert client.gather(futures) == [large(i) for i in range(9)]
        for key in only_there:
            assert victim not in client.who_has()[key]
        time.sleep(3)  # a nanny restarting it would have re-registered by now
        assert len(client.scheduler_info()["workers"]) == 2
        # the cluster forgets the retired process once it (and its nanny) exited
        wait_until(lambda: len(cluster.workers) == 2, 30, "the retired process forgotten")
        cluster.scale(3)  # and scaling counts only the workers that are there
        client.wait_for_workers(3, timeout=60)


def test_shutdown_stops_the_workers_and_the_scheduler(redis_url) -> None:
    cluster = _cluster(redis_url, 2)
    try:
        client = Client(cluster.redis_url, cluster_name=cluster.cluster_name)
        assert client.submit(slow, 1, 0.0).result(timeout=30) == 2
        workers = [w.process for w in cluster._workers]

        client.shutdown()

        assert client.status == "closed"
        wait_until(lambda: all(p.poll() is not None for p in workers), 30, "workers to exit")
        wait_until(lambda: cluster._scheduler.poll() is not None, 30, "the scheduler to exit")
        assert all(p.returncode == 0 for p in workers)  # nannies stood down cleanly
    finally:
        cluster.close()


def test_adapt_grows_under_a_burst_and_shrinks_after_it_without_losing_results(
    redis_url,
) -> None:
    with _cluster(redis_url, 1) as cluster, Client(cluster) as client:
        adaptive = cluster.adapt(minimum=1, maximum=4, interval=0.3, wait_count=2)
        try:
            kept = client.map(large, range(4))
            client.gather(kept)
            for burst in range(2):
                futures = client.map(slow, range(40), [0.3] * 40, pure=False)
                wait_until(
                    lambda: len(client.scheduler_info()["workers"]) >= 3,
                    60,
                    f"the cluster to grow in burst {burst}",
                )
                assert client.gather(futures) == [2 * i for i in range(40)]
                wait_until(
                    lambda: len(client.scheduler_info()["workers"]) == 1,
                    60,
                    f"the cluster to shrink after burst {burst}",
                )
                assert client.gather(kept) == [large(i) for i in range(4)]
                wait_until(lambda: len(cluster.workers) == 1, 30, "the cluster to forget them")
            wait_until(
                lambda: [d for d, _ in adaptive.log].count("down") >= 2,  # once per burst
                30,
                "two scale-downs logged",
            )
            assert max(n for d, n in adaptive.log if d == "up") <= 4  # never past maximum
        finally:
            adaptive.stop()


def test_shutdown_of_a_client_with_a_cluster_closes_the_cluster(redis_url) -> None:
    cluster = _cluster(redis_url, 1)
    client = Client(cluster)
    assert client.submit(slow, 2, 0.0).result(timeout=30) == 4
    processes = [w.process for w in cluster._workers] + [cluster._scheduler]

    client.shutdown()

    assert client.status == "closed" and cluster.status == "closed"
    assert all(p.poll() is not None for p in processes)
