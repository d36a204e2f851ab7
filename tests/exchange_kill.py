"""The SIGKILL-mid-exchange scenario shared by the shuffle and rechunk kill tests: three
worker processes, the collection computed, one worker killed while the exchange runs."""

from __future__ import annotations

import time
from typing import Any

from rdist import Client
from rdist.store import connect


def compute_killing_one_worker(collection: Any, token: str) -> tuple[Any, int, Any]:
    """The collection's value, computed while worker ``w2`` is SIGKILLed mid-exchange,
    and exchange ``token``'s run and owners in Redis afterwards."""
    from tests.proc_cluster import ProcCluster

    procs = ProcCluster(n_workers=3, worker_ttl=2.0)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster, timeout=60) as client:
            client.wait_for_workers(3, timeout=30)
            # given an exchange under way on three workers
            future = client.compute(collection)
            time.sleep(1.5)
            assert not future.done()
            # when one of them is killed
            procs.kill_worker("w2")
            # then the exchange restarts without it
            result = future.result(timeout=180)
            store = connect(procs.url, procs.cluster)
            try:
                run, owners = store.exchanges.current(token)
            finally:
                store.close()
    finally:
        procs.close()
    return result, run, owners
