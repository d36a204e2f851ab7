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

from tests.exchange_kill import compute_killing_one_worker  # noqa: E402

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
    whole = pd.concat([slow_part(i) for i in range(NPARTS)])
    with dask.config.set({"dataframe.shuffle.method": "p2p"}):
        shuffled = dd.from_map(slow_part, range(NPARTS)).shuffle("k", npartitions=12)
        counts = shuffled.map_partitions(key_count, meta=key_count(whole.iloc[:0]))
    # every key ends in exactly one partition, though a worker died mid-exchange
    result, run, owners = compute_killing_one_worker(counts, token_of(shuffled))
    assert run >= 1
    assert owners is not None and len(set(owners)) == 2
    assert int(result["rows"].sum()) == len(whole)
    assert int(result["keys"].sum()) == whole["k"].nunique()
    assert int(result["w"].sum()) == int(whole["w"].sum())
