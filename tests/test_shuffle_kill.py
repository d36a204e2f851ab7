"""A worker SIGKILLed in the middle of a P2P shuffle (rdist.shuffle): the exchange starts
again without it, every transfer runs again, and the result is exact."""

from __future__ import annotations

import time
from typing import Any

import pytest

pd = pytest.importorskip("pandas")
dd = pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")  # dask lowers a P2P shuffle with its task classes

import dask  # noqa: E402
import numpy as np  # noqa: E402

from rdist import Client  # noqa: E402
from rdist.store import connect  # noqa: E402

NPARTS = 24
ROWS = 20_000  # outputs too large for Redis: they live on workers


def slow_part(i: int) -> Any:
    """An input partition that takes a while, so the kill lands mid-exchange."""
    time.sleep(0.25)
    rng = np.random.default_rng(i)
    return pd.DataFrame(
        {"k": rng.integers(0, 5_000, ROWS), "v": rng.random(ROWS), "w": i * ROWS + np.arange(ROWS)}
    )


def key_count(part: Any) -> Any:
    return pd.DataFrame(
        {"keys": [part["k"].nunique()], "rows": [len(part)], "w": [part["w"].sum()]}
    )


def token_of(collection: Any) -> str:
    return next(
        str(n.spec.id)
        for n in dict(collection.__dask_graph__()).values()
        if type(n).__name__ == "P2PBarrierTask"
    )


@pytest.mark.timeout(240)
def test_sigkill_of_a_worker_mid_shuffle_restarts_the_exchange_and_the_result_is_exact() -> None:
    from tests.proc_cluster import ProcCluster

    whole = pd.concat([slow_part(i) for i in range(NPARTS)])
    procs = ProcCluster(n_workers=3, worker_ttl=2.0)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster, timeout=60) as client:
            client.wait_for_workers(3, timeout=30)
            with dask.config.set({"dataframe.shuffle.method": "p2p"}):
                shuffled = dd.from_map(slow_part, range(NPARTS)).shuffle("k", npartitions=12)
                counts = shuffled.map_partitions(key_count, meta=key_count(whole.iloc[:0]))
            token = token_of(shuffled)
            # given a shuffle under way on three workers
            future = client.compute(counts)
            time.sleep(1.5)
            assert not future.done()
            # when one of them is killed
            procs.kill_worker("w2")
            # then the exchange restarts without it, and every key is in exactly one partition
            result = future.result(timeout=180)
            store = connect(procs.url, procs.cluster)
            try:
                run, owners = store.exchanges.current(token)
            finally:
                store.close()
    finally:
        procs.close()
    assert run >= 1
    assert owners is not None and len(set(owners)) == 2
    assert int(result["rows"].sum()) == len(whole)
    assert int(result["keys"].sum()) == whole["k"].nunique()
    assert int(result["w"].sum()) == int(whole["w"].sum())
