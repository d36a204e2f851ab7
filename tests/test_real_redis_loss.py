"""Surviving Redis data loss: ``FLUSHALL``, or a Redis restart without persistence, in the
middle of a 10,000-task graph whose results live on the workers. The scheduler starts a
new cluster epoch, the workers re-announce what they hold, the client re-submits the
graphs of its futures, and every future completes with the right value (issue 15, part
4). Real processes: Redis, a scheduler, two workers; the client in this process."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from rdist import Client
from tests.proc_cluster import ProcCluster

pytestmark = pytest.mark.timeout(300)

N = 5000  #: tasks per layer: two layers, 10,000 tasks


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    time.sleep(0.0005)
    return 2 * x


@pytest.fixture
def procs(subprocess_pythonpath: None) -> Iterator[ProcCluster]:
    logs = os.environ.get("RDIST_TEST_LOGS")  # a directory for the processes' logs
    cluster = ProcCluster(n_workers=2, worker_ttl=10.0, log_dir=Path(logs) if logs else None)
    try:
        cluster.wait_for_workers()
        yield cluster
    finally:
        cluster.close()


def _flushall(procs: ProcCluster) -> None:
    redis.Redis.from_url(procs.url).flushall()


def _restart_empty(procs: ProcCluster) -> None:
    procs.redis.restart()  # no persistence: it comes back with nothing


@pytest.mark.parametrize("lose", [_flushall, _restart_empty], ids=["flushall", "restart"])
def test_every_future_completes_right_after_redis_loses_everything_mid_graph(
    procs: ProcCluster,
    lose: Callable[[ProcCluster], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Client(procs.url, cluster_name=procs.cluster, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        first = client.map(inc, range(N))
        second = client.map(double, first)
        while sum(f.done() for f in second) < N // 5:
            time.sleep(0.01)
        done_before = sum(f.done() for f in second)

        lost_at = time.monotonic()
        lose(procs)
        # time to resume: from the loss until a task submitted after it has its result
        assert client.submit(inc, 41, pure=False).result(timeout=90) == 42
        resumed = time.monotonic() - lost_at

        assert client.gather(second) == [2 * (x + 1) for x in range(N)]
        assert client.gather(first) == [x + 1 for x in range(N)]
        finished = time.monotonic() - lost_at
        assert client.recovery.rebuilds == 1

    assert done_before < N  # the loss came in the middle of the graph
    with capsys.disabled():
        print(
            f"\n[redis data loss: {lose.__name__.strip('_')}] {2 * N} tasks, "
            f"{done_before} of the last {N} done at the loss: service resumed in "
            f"{resumed:.2f} s, every future right {finished:.2f} s after the loss"
        )
