"""Queued futures, datasets and plugins against real processes and SIGKILL (issue 13): a
queue of futures and a published dataset keep their values through a scheduler SIGKILL and
restart, and a worker plugin reaches a worker joining later. Lease holders killed or
frozen: ``tests/test_lease_kills.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from rdist import Client, Queue
from tests.extension_tasks import EnvMark, inc, read_mark
from tests.proc_cluster import ProcCluster

pytestmark = pytest.mark.real


@pytest.fixture
def procs(redis_server: Any) -> Iterator[ProcCluster]:
    cluster = ProcCluster(n_workers=1, redis=redis_server)
    try:
        cluster.wait_for_workers()
        yield cluster
    finally:
        cluster.close()


def test_queued_futures_and_datasets_keep_their_values_through_a_scheduler_kill(procs) -> None:
    with Client(procs.url, cluster_name=procs.cluster) as putter:
        futures = [putter.submit(inc, i) for i in range(3)]
        putter.gather(futures)
        queue = Queue("results", client=putter)
        for future in futures:
            queue.put(future)
        putter.publish_dataset(first=futures[0])
        del futures

    procs.kill_scheduler()
    procs.start_scheduler()

    with Client(procs.url, cluster_name=procs.cluster, timeout=30) as reader:
        queue = Queue("results", client=reader)
        taken = [queue.get(timeout=20) for _ in range(3)]
        assert reader.gather(taken) == [1, 2, 3]
        assert reader.get_dataset("first").result(timeout=20) == 1


def test_a_worker_plugin_registered_before_a_worker_joins_is_set_up_on_it(procs) -> None:
    with Client(procs.url, cluster_name=procs.cluster) as c:
        c.register_plugin(EnvMark("joined-later"), name="mark")
        name = procs.start_worker()
        procs.wait_for_workers([name])
        address = procs.live_workers()[name]

        got = c.submit(read_mark, workers=[address], pure=False).result(timeout=20)

        assert got == "joined-later"
