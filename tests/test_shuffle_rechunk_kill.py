"""P2P rechunks of dask.array on real processes (a real redis-server, worker processes):
exact, and still exact when a worker is SIGKILLed in the middle of the exchange."""

from __future__ import annotations

import time
from typing import Any

import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("distributed")  # dask lowers a P2P rechunk with its task classes

import dask  # noqa: E402
import numpy as np  # noqa: E402

from rdist import Client  # noqa: E402
from tests.exchange_kill import compute_killing_one_worker  # noqa: E402

#: dask merges input chunks up to ``array.chunk-size`` first; at its default these small
#: arrays would become one chunk (a group of one input: a cut, no exchange)
P2P = {"array.rechunk.method": "p2p", "array.chunk-size": "16KiB"}
ROWS, COLS, STEP = 600, 600, 50  # row blocks -> column blocks: every input meets every output


def slow_block(block_id: Any = None) -> Any:
    """Input row block ``block_id[0]``: distinct values, and slow, so a kill lands mid-exchange."""
    time.sleep(0.25)
    i = block_id[0]
    return np.arange(i * STEP * COLS, (i + 1) * STEP * COLS, dtype="int64").reshape(STEP, COLS)


def whole() -> Any:
    return np.arange(ROWS * COLS, dtype="int64").reshape(ROWS, COLS)


def rows_to_columns() -> Any:
    x = da.map_blocks(slow_block, chunks=((STEP,) * (ROWS // STEP), (COLS,)), dtype="int64")
    with dask.config.set(P2P):
        return x.rechunk((ROWS, STEP))


def tokens_of(collection: Any) -> list[str]:
    """The exchanges of dask's P2P rechunk graph (groups of more than one input chunk)."""
    return [
        str(n.spec.id)
        for n in dict(collection.__dask_graph__()).values()
        if type(n).__name__ == "P2PBarrierTask" and len(n.dependencies) > 1
    ]


@pytest.mark.timeout(180)
def test_p2p_rechunk_on_real_processes_gives_numpys_result() -> None:
    from tests.proc_cluster import ProcCluster

    values = np.random.default_rng(5).integers(0, 2**31, (20, 30, 40)).astype("int32")
    x = da.from_array(values, chunks=(4, 30, 40))
    with dask.config.set(P2P):
        y = x.rechunk((20, 5, 8))
    assert tokens_of(y)  # dask built an exchange, not its task-based fallback
    procs = ProcCluster(n_workers=2)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster, timeout=60) as client:
            client.wait_for_workers(2, timeout=30)
            got = client.compute(y).result(timeout=120)
            total = client.compute(y.sum(dtype="int64")).result(timeout=120)
    finally:
        procs.close()
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, values)
    assert int(total) == int(values.sum(dtype="int64"))


@pytest.mark.timeout(240)
def test_sigkill_of_a_worker_mid_rechunk_restarts_the_exchange_and_the_result_is_exact() -> None:
    rechunked = rows_to_columns()
    (token,) = tokens_of(rechunked)  # one group: every input chunk sends to every output
    # every element is in its place, though a worker died mid-exchange
    result, run, owners = compute_killing_one_worker(rechunked, token)
    assert run >= 1
    assert owners is not None and len(set(owners)) == 2
    np.testing.assert_array_equal(result, whole())
