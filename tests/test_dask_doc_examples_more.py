"""More of dask's documentation examples, run with only the import changed (issue 12): the
asynchronous client (dask-examples' "Async/Await and Non-Blocking Execution"), collections
computed with plain ``.compute()``/``persist`` on a client (the distributed quickstart and
the dask.array/dask.dataframe pages), ``get_versions(check=True)`` and structured events
(``log_event``/``get_events``/``subscribe_topic``). The work is checked to have run on
the cluster's worker processes, not only to give the right answer.

Sizes are smaller than the docs' so that the tests stay quick on two cores.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from rdist import Client, as_completed, get_worker  # noqa: E402


def inc(x: int) -> int:
    return x + 1


def worker_pids(client: Client) -> set[int]:
    return set(client.run(os.getpid).values())


# -- the asynchronous client --------------------------------------------------------------------
def test_async_await_notebook_example(redis_url: str, cluster: Any) -> None:
    """``client = await Client(asynchronous=True)``; ``await future``; collections through
    ``client.compute`` awaited; ``await client.close()``."""

    async def main() -> tuple[int, float, bool]:
        client = await Client(cluster, asynchronous=True)
        future = client.submit(inc, 10)
        result = await future
        x = da.ones((1000, 1000), chunks=(250, 250))
        total = await client.compute(x.sum())
        await client.close()
        return result, float(total), client.status == "closed"

    assert asyncio.run(main()) == (11, 1_000_000.0, True)


def test_async_with_client_and_async_for_as_completed(cluster: Any) -> None:
    async def main() -> tuple[list[int], list[int]]:
        async with Client(cluster, asynchronous=True) as client:
            futures = client.map(inc, range(10))
            seen = []
            async for future in as_completed(futures):
                seen.append(await future)
            results = await client.gather(futures)
        return sorted(seen), results

    seen, results = asyncio.run(main())
    assert seen == results == list(range(1, 11))


# -- collections with plain compute -----------------------------------------------------------
def test_quickstart_array_example_computes_on_the_cluster(client: Client) -> None:
    x = da.random.random((2000, 2000), chunks=(500, 500))
    y = x + x.T
    z = y[::2, 1000:].mean(axis=1)
    values = z.compute()
    assert values.shape == (1000,) and 0.9 < float(values.mean()) < 1.1
    assert dask.delayed(os.getpid)().compute() in worker_pids(client)


def test_dataframe_groupby_and_persist_example(client: Client) -> None:
    pytest.importorskip("pandas")
    df = dask.datasets.timeseries(start="2000-01-01", end="2000-01-03", freq="10s")
    df = df.persist()  # the partitions now live on the workers
    means = df.groupby("name").x.mean().compute()
    assert len(means) > 0 and means.between(-1, 1).all()
    assert len(client.who_has()) >= df.npartitions


# -- versions -------------------------------------------------------------------------------
def test_get_versions_check_true(client: Client) -> None:
    versions = client.get_versions(check=True)
    assert set(versions) >= {"client", "scheduler", "workers"}
    assert len(versions["workers"]) == 2
    python = versions["client"]["packages"]["python"]
    assert all(w["packages"]["python"] == python for w in versions["workers"].values())


# -- structured events ------------------------------------------------------------------------
def log_from_a_task(n: int) -> str:
    get_worker().log_event("demo-topic", {"task": n})
    return get_worker().address


def test_events_logged_by_tasks_and_the_client(client: Client) -> None:
    received: list[tuple[float, Any]] = []
    arrived = threading.Event()

    def handler(event: tuple[float, Any]) -> None:
        received.append(event)
        if len(received) >= 3:
            arrived.set()

    client.subscribe_topic("demo-topic", handler)
    client.log_event("demo-topic", {"from": "client"})
    where = client.gather(client.map(log_from_a_task, [1, 2]))
    assert set(where) <= set(client.scheduler_info()["workers"])
    deadline = time.monotonic() + 20
    while len(client.get_events("demo-topic")) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    events = client.get_events("demo-topic")
    assert sorted(str(msg) for _, msg in events) == sorted(
        str(m) for m in ({"from": "client"}, {"task": 1}, {"task": 2})
    )
    assert all(isinstance(ts, float) for ts, _ in events)
    assert arrived.wait(20), received
    client.unsubscribe_topic("demo-topic")
