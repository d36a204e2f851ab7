"""A Redis restart while tasks flow must not strand stream entries (real tier).

Redis executes a read it receives just before it shuts down -- the entries are delivered
and recorded as pending for the reader -- but never sends the reply; the reader's client
reconnects and reads ">" again. Entries delivered that way come back only to a reader that
looks at its own pending list: without that, a lost task-done (scheduler) or compute
(worker) leaves a task processing forever -- the chaos suite's hang after its Redis restart.
"""

from __future__ import annotations

import time

import pytest

from rdist import Client, wait
from tests import resilience_tasks as rt
from tests.proc_cluster import ProcCluster, stream_view

pytestmark = pytest.mark.real

RESTARTS = 4


@pytest.mark.timeout(300)
def test_tasks_flowing_through_redis_restarts_all_finish() -> None:
    procs = ProcCluster(n_workers=2, persistence=True, worker_ttl=10.0)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster, timeout=60) as client:
            client.wait_for_workers(2, timeout=30)
            futures = []
            for r in range(RESTARTS):
                # a steady flow of quick tasks, so streams are being read as Redis stops
                futures += [
                    client.submit(rt.slow_inc, r * 100_000 + i, 0.001, pure=False)
                    for i in range(400)
                ]
                time.sleep(0.3)
                procs.redis.restart()
            try:
                done, not_done = wait(futures, timeout=60)
                assert not not_done, f"{len(not_done)} of {len(futures)} tasks never finished"
            except (AssertionError, TimeoutError) as exc:  # a hang: say where the entries are
                from rdist.store import connect

                store = connect(procs.url, procs.cluster)
                views = {"sched": stream_view(store, store.keys.sched, "scheduler")}
                for address in procs.live_workers().values():
                    views[address] = stream_view(store, store.keys.worker_stream(address), "worker")
                store.close()
                raise AssertionError(f"tasks did not finish ({exc!r}); streams {views}") from None
            assert sorted(client.gather(futures)) == sorted(
                r * 100_000 + i + 1 for r in range(RESTARTS) for i in range(400)
            )
    finally:
        procs.close()
