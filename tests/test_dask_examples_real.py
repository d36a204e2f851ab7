"""dask.distributed's documented examples where processes matter, with only the import
changed, on a LocalCluster of worker processes under nannies (real tier): the
``Semaphore`` docstring's tasks sharing a semaphore, the futures page's queue of futures
put by tasks (``get_client`` in a worker process) and its stop flag in a ``Variable``, and
the nanny plugins -- ``Environ`` and ``NannyPlugin`` have no example in dask's docstrings,
so their use follows their documented signatures (``Environ(environ)``; a ``NannyPlugin``
with ``setup(nanny)`` and ``restart = True``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rdist import Client, LocalCluster

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def client(redis_server: Any, subprocess_pythonpath: None) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            nanny=True,
            redis_url=redis_server.url,
            dashboard_address=None,
        ) as cluster,
        Client(cluster, timeout=30) as c,
    ):
        c.wait_for_workers(2, timeout=60)
        yield c


def access_resource(s, sem):
    # This automatically acquires a lease from the semaphore (if available) which will be
    # released when leaving the context manager.
    with sem:
        time.sleep(0.05)
        return sem.get_value()  # (how many leases are out while this one is held)


def test_semaphore_example_in_worker_processes(client: Client) -> None:
    from rdist import Semaphore

    sem = Semaphore(max_leases=2, name="my_database")

    futures = client.map(access_resource, range(10), sem=sem)
    held = client.gather(futures)
    # Once done, close the semaphore to clean up the state on scheduler side.
    sem.close()

    assert set(held) <= {1, 2} and max(held) == 2  # never more than max_leases, both used


def load(filename: str) -> int:
    return len(filename)


def process(data: int) -> int:
    return data * 10


def load_and_submit(filename):
    from rdist import Queue, get_client

    data = load(filename)
    client = get_client()
    future = client.submit(process, data)
    queue = Queue("results")  # (the page's module-level queue, named in the task)
    queue.put(future)


def test_queue_of_futures_put_by_tasks_example(client: Client) -> None:
    from rdist import Queue, fire_and_forget

    queue = Queue("results")
    filenames = ["a", "bb", "ccc"]
    for filename in filenames:
        future = client.submit(load_and_submit, filename)
        fire_and_forget(future)

    results = []
    for _ in filenames:  # the page's ``while True`` loop, for the three files
        future = queue.get(timeout=30)
        results.append(future.result(timeout=30))
    assert sorted(results) == [10, 20, 30]


def long_running_task():
    from rdist import Variable

    stop = Variable("stop-flag")
    steps = 0
    while not stop.get(timeout=10):
        time.sleep(0.05)  # do work
        steps += 1
    return steps


def test_variable_as_a_stop_flag_example(client: Client) -> None:
    from rdist import Variable

    stop = Variable("stop-flag")
    stop.set(False)

    future = client.submit(long_running_task)
    time.sleep(0.5)
    assert not future.done()
    stop.set(True)

    assert future.result(timeout=30) > 0


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def _every_worker(client: Client, fn: Any, *args: Any) -> list[Any] | None:
    from rdist import wait

    workers = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(fn, *args, workers=[w], pure=False) for w in workers]
    try:
        wait(futures, timeout=10)
    except TimeoutError:
        client.cancel(futures)
        return None
    return client.gather(futures) if len(futures) == 2 else None


def _until(client: Client, fn: Any, args: tuple[Any, ...], want: Any) -> None:
    from tests.client_helpers import wait_until

    wait_until(
        lambda: _every_worker(client, fn, *args) == [want, want],
        timeout=60,
        what=f"both workers to answer {want!r}",
    )


def test_environ_plugin(client: Client) -> None:
    from rdist import Environ

    client.register_plugin(Environ({"MY_EXAMPLE_VARIABLE": "set-by-environ"}))

    _until(client, read_env, ("MY_EXAMPLE_VARIABLE",), "set-by-environ")


def test_nanny_plugin(client: Client) -> None:
    from tests.extension_tasks import NANNY_MARK, EnvNannyPlugin

    plugin = EnvNannyPlugin("set-by-a-nanny-plugin")
    plugin.restart = True  # the workers start again, with what setup changed

    answers = client.register_plugin(plugin, name="example")

    assert len(answers) == 2 and all(a == {"status": "OK"} for a in answers.values())
    _until(client, read_env, (NANNY_MARK,), "set-by-a-nanny-plugin")
