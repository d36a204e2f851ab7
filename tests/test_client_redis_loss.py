"""Redis losing everything under a whole in-process cluster (fakeredis tier): the client
rebuilds from its journal, workers re-announce, and work submitted in the moment between
the loss and the new epoch -- depending on futures whose tasks Redis forgot -- still runs."""

from __future__ import annotations

import time

from tests.conftest import fake_cluster


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def test_futures_done_before_a_flushall_and_work_submitted_right_after_all_complete() -> None:
    with fake_cluster(n_workers=2) as (client, cluster):
        first = client.map(inc, range(200))
        assert client.gather(first) == list(range(1, 201))

        cluster.scheduler.store.redis.flushall()
        second = client.map(double, first)  # its inputs are unknown until the rebuild

        assert client.gather(second) == [2 * x for x in range(1, 201)]
        assert client.gather(first) == list(range(1, 201))
        assert client.recovery.rebuilds == 1
        deadline = time.monotonic() + 10
        while len(cluster.scheduler.state.workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(cluster.scheduler.state.workers) == 2  # both joined again
