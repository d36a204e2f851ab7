"""The core contract end to end: real redis-server, scheduler and workers as processes."""

from __future__ import annotations

import gc
import os
import time
import traceback
from typing import Any

import numpy as np
import pytest

from rdist import Client, LocalCluster, get_worker
from rdist.embedded import EmbeddedRedis
from rdist.store import connect
from tests.client_helpers import wait_until

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]

# Helpers run in the worker processes: module-level, so they pickle by reference and the
# workers import them from this module (the repo root is on their PYTHONPATH).


class CustomTaskError(Exception):
    """Raised by a task; the client must get this very type back."""


def inc(x: int) -> int:
    return x + 1


def double(x: int) -> int:
    return 2 * x


def add(*xs: int) -> int:
    return sum(xs)


def fail(message: str) -> None:
    raise CustomTaskError(message)


def slow_inc(x: int, delay: float) -> int:
    time.sleep(delay)
    return x + 1


def where_am_i(_: Any = None) -> str:
    return get_worker().address


def big_array(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def checksum_with_origin(arr: np.ndarray) -> tuple[float, int, str]:
    return float(arr.sum()), int(arr.nbytes), get_worker().address


def describe(value: Any) -> tuple[str, Any]:
    return type(value).__name__, value


def worker_addresses(client: Client) -> list[str]:
    return sorted(client.scheduler_info()["workers"])


def test_submit_returns_pending_future_then_result(client: Client) -> None:
    future = client.submit(slow_inc, 1, 0.3)
    assert not future.done()

    assert future.result(timeout=20) == 2
    assert future.done()
    assert future.status == "finished"


def test_map_and_gather_a_thousand_tasks(client: Client) -> None:
    futures = client.map(double, range(1000))

    values = client.gather(futures)

    assert values == [2 * i for i in range(1000)]
    assert all(f.status == "finished" for f in futures)


def test_map_spreads_independent_tasks_over_both_workers(client: Client) -> None:
    futures = client.map(slow_inc, range(8), delay=0.1)
    client.gather(futures)

    holders = {a for hs in client.who_has(futures).values() for a in hs}
    assert holders == set(worker_addresses(client))


def test_dependency_chain_and_fan_in(client: Client) -> None:
    x = client.submit(inc, 0)
    for _ in range(30):
        x = client.submit(inc, x)
    branches = [client.submit(double, x, pure=False) for _ in range(4)]
    total = client.submit(add, *branches)

    assert x.result(timeout=30) == 31
    assert total.result(timeout=30) == 4 * 62


def test_erred_task_reraises_its_type_with_traceback_while_other_work_continues(
    client: Client,
) -> None:
    bad = client.submit(fail, "boom-42")
    dependent = client.submit(inc, bad)
    good = client.map(slow_inc, range(20), delay=0.01)

    with pytest.raises(CustomTaskError, match="boom-42"):
        bad.result(timeout=20)
    assert bad.status == "error"
    assert isinstance(bad.exception(), CustomTaskError)
    tb = bad.traceback()
    assert [frame.name for frame in traceback.extract_tb(tb)][-1] == "fail"
    assert "raise CustomTaskError" in "".join(traceback.format_tb(tb))
    with pytest.raises(CustomTaskError, match="boom-42"):
        dependent.result(timeout=20)
    assert client.gather(good) == list(range(1, 21))
    assert client.submit(inc, 100).result(timeout=20) == 101


def test_scatter_then_task_uses_scattered_data(client: Client) -> None:
    data = {"weights": list(range(100)), "name": "abc"}
    [remote] = client.scatter([data])
    assert remote.status == "finished"

    result = client.submit(describe, remote).result(timeout=20)

    assert result == ("dict", data)
    assert remote.result(timeout=20) == data
    assert client.who_has([remote])[remote.key]


def test_workers_restriction_by_address_runs_only_there(client: Client) -> None:
    for address in worker_addresses(client):
        futures = client.map(where_am_i, range(6), workers=[address], pure=False)

        assert set(client.gather(futures)) == {address}
        assert all(hs == [address] for hs in client.who_has(futures).values())


def test_introspection_who_has_has_what_nthreads_scheduler_info_run(
    client: Client, cluster: LocalCluster
) -> None:
    a, b = worker_addresses(client)
    fa = client.submit(inc, 1, workers=[a])
    fb = client.submit(inc, 2, workers=[b])
    assert client.gather([fa, fb]) == [2, 3]

    assert client.who_has([fa, fb]) == {fa.key: [a], fb.key: [b]}
    has_what = client.has_what()
    assert fa.key in has_what[a] and fb.key in has_what[b]
    assert fa.key not in has_what[b]
    assert client.nthreads() == {a: 1, b: 1}
    info = client.scheduler_info()
    assert set(info["workers"]) == {a, b}
    names = {w["name"] for w in info["workers"].values()}
    assert names == set(cluster.worker_addresses()) - {""}
    assert client.run(where_am_i) == {a: a, b: b}
    pids = client.run(os.getpid)
    assert pids == {addr: w["pid"] for addr, w in info["workers"].items()}
    assert os.getpid() not in pids.values()
    assert client.run(os.getpid, workers=[a]) == {a: pids[a]}


def test_large_array_moves_worker_to_worker(client: Client) -> None:
    a, b = worker_addresses(client)
    n = 20 * 2**20 // 8  # 20 MiB of float64
    produced = client.submit(big_array, n, 7, workers=[a])
    consumed = client.submit(checksum_with_origin, produced, workers=[b])

    total, nbytes, ran_on = consumed.result(timeout=60)

    expected = big_array(n, 7)
    assert ran_on == b
    assert nbytes == expected.nbytes
    assert total == pytest.approx(float(expected.sum()), rel=1e-12)
    assert client.who_has([produced])[produced.key][0] == a
    store = connect(client.redis_url, client.cluster_name)
    try:  # too large for Redis: it went over the data plane, not through the results hash
        assert not store.redis.hexists(store.keys.results, produced.key)
    finally:
        store.close()
    np.testing.assert_array_equal(produced.result(timeout=60), expected)


def test_released_futures_are_forgotten_by_the_scheduler(client: Client) -> None:
    store = connect(client.redis_url, client.cluster_name)
    try:
        future = client.submit(inc, 41, key="forget-me")
        assert future.result(timeout=20) == 42
        assert store.redis.hexists(store.keys.tasks, "forget-me")
        holder = client.who_has([future])["forget-me"][0]

        del future
        gc.collect()

        wait_until(
            lambda: not store.redis.hexists(store.keys.tasks, "forget-me"),
            10,
            "task record removal",
        )
        wait_until(
            lambda: "forget-me" not in client.has_what().get(holder, []), 10, "has_what update"
        )
        assert not store.redis.hexists(store.keys.results, "forget-me")
        again = client.submit(inc, 1, key="forget-me")
        assert again.result(timeout=20) == 2  # recomputed with the new spec
    finally:
        store.close()


def test_second_client_connects_by_url_to_running_cluster(
    client: Client, cluster: LocalCluster
) -> None:
    first = client.submit(double, 21)
    assert first.result(timeout=20) == 42

    with Client(address=cluster.redis_url, cluster_name=cluster.cluster_name, timeout=30) as other:
        assert set(other.scheduler_info()["workers"]) == set(worker_addresses(client))
        same = other.submit(double, 21)
        assert same.key == first.key
        assert same.result(timeout=20) == 42
        assert other.gather(other.map(inc, range(50))) == list(range(1, 51))

    assert client.submit(inc, 5).result(timeout=20) == 6  # the first client is unaffected


def test_embedded_default_cluster_cleans_up_redis(subprocess_pythonpath: None) -> None:
    with LocalCluster(n_workers=1, nanny=False, dashboard_address=None) as lc, Client(lc) as c:
        embedded = lc._redis
        assert isinstance(embedded, EmbeddedRedis)
        assert lc.redis_url.startswith("unix://")
        process, socket_dir = embedded.process, embedded.dir
        assert process is not None and os.path.isdir(socket_dir)
        assert c.submit(inc, 1).result(timeout=20) == 2
        assert c.gather(c.map(double, range(10))) == [2 * i for i in range(10)]

    assert process.poll() is not None, "embedded redis-server still running after close"
    assert not os.path.exists(socket_dir)


def test_plain_dask_compute_runs_in_the_worker_processes(client: Client) -> None:
    dask = pytest.importorskip("dask")
    worker_pids = set(client.run(os.getpid).values())
    task = dask.delayed(os.getpid)(dask_key_name="whose-pid")
    assert task.compute() in worker_pids
    (pid,) = dask.compute(dask.delayed(os.getpid)(dask_key_name="whose-pid-2"))
    assert pid in worker_pids and os.getpid() not in worker_pids


def test_upload_file_reaches_every_worker_and_one_that_joins_later(
    client: Client, cluster: LocalCluster, tmp_path: Any
) -> None:
    module = tmp_path / "rdist_uploaded_helper.py"
    module.write_text("def triple(x):\n    return 3 * x\n")

    def use(x: int) -> int:
        import rdist_uploaded_helper

        return rdist_uploaded_helper.triple(x)

    client.upload_file(str(module))
    assert sorted(client.gather(client.map(use, range(4), pure=False))) == [0, 3, 6, 9]
    cluster.scale(3)
    client.wait_for_workers(3, timeout=30)
    newcomer = next(a for a, w in client.scheduler_info()["workers"].items() if "3" in w["name"])
    assert client.submit(use, 5, workers=[newcomer], pure=False).result(timeout=30) == 15
    with pytest.raises(FileNotFoundError, match="filename="):
        client.upload_file(str(tmp_path / "missing.py"))


def test_metadata_and_topic_events_on_a_real_redis(client: Client) -> None:
    client.set_metadata(["run", "stage"], "fit")
    assert client.get_metadata("run") == {"stage": "fit"}
    client.log_event("real-topic", {"ok": True})
    assert [msg for _, msg in client.get_events("real-topic")] == [{"ok": True}]
