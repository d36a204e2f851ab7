"""The Active Memory Manager on a real LocalCluster (processes, nannies, real Redis):
ReduceReplicas drops extra copies and every value stays exact (against dask's own
results), the manager started by configuration cleans up the copies dependencies left,
and retire_workers moves everything off a worker through RetireWorker."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from rdist import Client, LocalCluster, futures_of, wait
from tests.client_helpers import wait_until

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]

#: bytes past the size kept in Redis: such a result lives on its worker only
LARGE = 200_000


def large(i: int) -> bytes:
    return bytes([i % 256]) * LARGE


def size_of(*blobs: bytes) -> int:
    return sum(len(b) for b in blobs)


def _cluster(redis_url: str, n: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        redis_url=redis_url,
        name=f"amm-{uuid.uuid4().hex[:8]}",
        dashboard_address=None,
        timeout=60,
    )


def _copies(client: Client, futures: list) -> int:
    return sum(len(ws) for ws in client.who_has(futures).values())


def test_reduce_replicas_keeps_one_copy_and_every_value_exact(redis_url) -> None:
    da = pytest.importorskip("dask.array")
    with _cluster(redis_url, 3) as cluster, Client(cluster) as client:
        futures = client.map(large, range(6))
        x = da.random.RandomState(0).random((400, 400), chunks=100)
        persisted = client.persist(x)
        chunks = futures_of(persisted)
        wait(chunks)
        client.gather(futures)
        client.replicate(futures + chunks)
        assert _copies(client, futures) == 18

        client.amm.run_once()

        assert _copies(client, futures) == 6
        assert _copies(client, chunks) == len(chunks)
        assert client.gather(futures) == [large(i) for i in range(6)]
        total = client.compute(persisted.sum()).result(timeout=60)
        expected = x.sum().compute(scheduler="sync")  # dask's own result
        assert np.isclose(total, expected)


def test_started_by_configuration_it_drops_the_copies_dependencies_left(
    redis_url, monkeypatch
) -> None:
    monkeypatch.setenv("RDIST_AMM__START", "true")
    monkeypatch.setenv("RDIST_AMM__INTERVAL", "0.2")
    with _cluster(redis_url, 3) as cluster, Client(cluster) as client:
        assert client.amm.running() is True
        addresses = sorted(client.scheduler_info()["workers"])
        x = client.submit(large, 7, workers=[addresses[0]])
        users = [client.submit(size_of, x, workers=[a], pure=False) for a in addresses[1:]]
        assert client.gather(users) == [LARGE, LARGE]

        # the dependents fetched copies of x; once they ran, the manager drops them
        wait_until(lambda: _copies(client, [x]) == 1, 30, "the extra copies to go")
        assert x.result(timeout=30) == large(7)


def test_retire_worker_moves_every_result_off_the_worker(redis_url) -> None:
    da = pytest.importorskip("dask.array")
    with _cluster(redis_url, 3) as cluster, Client(cluster) as client:
        victim = sorted(client.scheduler_info()["workers"])[0]
        futures = client.map(large, range(12), workers=[victim])
        # chunks of 80 kB: past the size kept in Redis, they live on workers only
        x = da.random.RandomState(1).random((400, 400), chunks=100)
        persisted = client.persist(x)
        client.gather(futures)
        wait(futures_of(persisted))

        retired = client.retire_workers([victim])

        assert list(retired) == [victim]
        assert victim not in client.scheduler_info()["workers"]
        left = {k: ws for k, ws in client.who_has().items() if victim in ws}
        assert not left, (victim, left, client.scheduler_info()["workers"].keys())
        assert client.gather(futures) == [large(i) for i in range(12)]
        total = client.compute(persisted.sum()).result(timeout=60)
        assert np.isclose(total, x.sum().compute(scheduler="sync"))
