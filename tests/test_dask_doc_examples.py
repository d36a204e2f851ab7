"""dask.distributed's documentation examples for futures, run as written -- only the
import changed from ``dask.distributed`` to ``rdist`` -- against a real cluster: a real
redis-server, a scheduler process and worker processes under nannies.

Sources (paraphrased to the doc's shape, values checked): "Futures" (submit, map,
gather, dependencies, as_completed, wait, fire_and_forget, submit tasks from tasks,
secede/rejoin, worker_client), the API page (Reschedule, Future.type, client.futures,
recreate_error_locally, run with ``wait=False`` and async functions, retire_workers).
"""

from __future__ import annotations

import os
import time
import uuid

import pytest

from rdist import (
    Client,
    LocalCluster,
    Reschedule,
    as_completed,
    fire_and_forget,
    get_client,
    get_worker,
    rejoin,
    secede,
    wait,
    worker_client,
)
from tests.client_helpers import wait_until

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]


@pytest.fixture(scope="module")
def client(redis_server):
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            redis_url=redis_server.url,
            name=f"docs-{uuid.uuid4().hex[:8]}",
            dashboard_address=None,
            timeout=60,
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


# the functions of the examples (module level: the workers import them by name)


def inc(x):
    return x + 1


def add(x, y):
    return x + y


def square(x):
    return x**2


def neg(x):
    return -x


def score(x):
    return (x * 37) % 101


def div(x, y):
    return x / y


def fib(n):
    if n < 2:
        return n
    client = get_client()
    a_future = client.submit(fib, n - 1)
    b_future = client.submit(fib, n - 2)
    a, b = client.gather([a_future, b_future])
    return a + b


def fib_worker_client(n):
    if n < 2:
        return n
    with worker_client() as client:
        a_future = client.submit(fib_worker_client, n - 1)
        b_future = client.submit(fib_worker_client, n - 2)
        a, b = client.gather([a_future, b_future])
    return a + b


def long_running(n):
    client = get_client()
    futures = client.map(inc, range(n))
    secede()
    results = client.gather(futures)
    rejoin()
    return sum(results)


def write_to_file(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def reschedule_once(marker):
    """Reschedule on the first attempt (the marker file remembers it across processes)."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return get_worker().address
    os.close(fd)
    raise Reschedule()


def _read(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return f.read()


async def worker_status(dask_worker):
    return dask_worker.status


# -- Futures: submit, result, dependencies, map, gather --------------------------------------


def test_submit_and_result(client):
    x = client.submit(inc, 10)
    assert x.result() == 11


def test_submit_tasks_with_dependencies(client):
    a = client.submit(inc, 10)
    b = client.submit(inc, 20)
    c = client.submit(add, a, b)
    assert c.result() == 32


def test_map_and_gather(client):
    A = client.map(square, range(10))
    B = client.map(neg, A)
    total = client.submit(sum, B)
    assert total.result() == -285
    assert client.gather(A) == [i**2 for i in range(10)]


def test_submit_many_then_sum(client):
    L = client.map(inc, range(1000))
    total = client.submit(sum, L)
    assert total.result() == sum(range(1, 1001))


# -- as_completed and wait -----------------------------------------------------------------


def test_as_completed_keeps_the_best(client):
    x_values = range(30)
    futures = client.map(score, x_values)
    best = -1
    for future in as_completed(futures):
        y = future.result()
        if y > best:
            best = y
    assert best == max(score(x) for x in x_values)


def test_as_completed_grows_while_iterating(client):
    futures = client.map(inc, range(5))
    seq = as_completed(futures)
    seen = []
    for future in seq:
        y = future.result()
        seen.append(y)
        if y < 20:
            new_future = client.submit(add, y, 10)
            seq.add(new_future)
    assert sorted(seen) == sorted([1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 21, 22, 23, 24, 25])


def test_as_completed_with_results_and_batches(client):
    futures = client.map(inc, range(20))
    pairs = [(f.key, r) for f, r in as_completed(futures, with_results=True)]
    assert sorted(r for _, r in pairs) == list(range(1, 21))
    results = []
    for batch in as_completed(client.map(square, range(10)), with_results=True).batches():
        for _future, result in batch:
            results.append(result)
    assert sorted(results) == [i**2 for i in range(10)]


def test_wait_all_and_first_completed(client):
    futures = client.map(inc, range(10))
    done, not_done = wait(futures)
    assert len(done) == 10 and not not_done
    more = client.map(square, range(5), pure=False)
    done, not_done = wait(more, return_when="FIRST_COMPLETED")
    assert done and len(done) + len(not_done) == 5


# -- fire_and_forget -------------------------------------------------------------------------


def test_fire_and_forget_runs_after_the_future_is_dropped(client, tmp_path):
    path = str(tmp_path / "out.txt")
    a = client.submit(inc, 1)
    b = client.submit(square, a)
    c = client.submit(write_to_file, path, b)
    fire_and_forget(c)
    del a, b, c
    wait_until(lambda: _read(path) == "4", 30, "the write")


# -- submit tasks from tasks, secede / rejoin, worker_client ---------------------------------


def test_get_client_inside_a_task(client):
    future = client.submit(fib, 10)
    assert future.result() == 55


def test_worker_client_inside_a_task(client):
    assert client.submit(fib_worker_client, 8).result() == 21


def test_secede_and_rejoin_around_a_long_wait(client):
    futures = [client.submit(long_running, 10, pure=False) for _ in range(6)]
    assert client.gather(futures) == [sum(range(1, 11))] * 6


# -- the API page ------------------------------------------------------------------------------


def test_reschedule_moves_the_task_back_to_the_scheduler(client, tmp_path):
    future = client.submit(reschedule_once, str(tmp_path / "marker"), pure=False)
    assert future.result(timeout=60) in client.scheduler_info()["workers"]
    assert future.status == "finished"


def test_future_type_and_client_futures(client):
    x = client.submit(inc, 1)
    x.result()
    assert x.type == int  # noqa: E721  (as the docs write it)
    assert x.key in client.futures


def test_recreate_error_locally(client):
    x = client.submit(div, 1, 0)
    wait([x])
    with pytest.raises(ZeroDivisionError):
        client.recreate_error_locally(x)


def test_run_on_workers(client):
    pids = client.run(os.getpid)
    assert len(pids) == 2 and all(isinstance(p, int) for p in pids.values())
    assert client.run(worker_status) == {w: "running" for w in pids}
    first = sorted(pids)[0]
    assert client.run(os.getpid, workers=[first]) == {first: pids[first]}
    assert client.run(os.getpid, wait=False) is None


def test_processing_and_nbytes(client):
    futures = client.map(inc, range(4))
    client.gather(futures)
    assert set(client.processing()) == set(client.scheduler_info()["workers"])
    assert set(client.nbytes(futures)) == {f.key for f in futures}
    assert "inc" in client.nbytes(summary=True)


def test_retire_workers_then_the_cluster_carries_on(redis_server):
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            redis_url=redis_server.url,
            name=f"docs-{uuid.uuid4().hex[:8]}",
            dashboard_address=None,
            timeout=60,
        ) as cluster,
        Client(cluster) as client,
    ):
        x = client.submit(inc, 1)
        x.result()
        workers = sorted(client.scheduler_info()["workers"])
        client.retire_workers(workers=workers[:1])
        assert sorted(client.scheduler_info()["workers"]) == workers[1:]
        assert x.result() == 2
        assert client.submit(inc, x).result() == 3
        time.sleep(2)  # no nanny brings the retired worker back
        assert len(client.scheduler_info()["workers"]) == 1
