"""dask.distributed's documented examples (the docstrings' ``Examples`` sections of
``distributed`` 2026.8.0, and the actor page), run with only the import changed to rdist, on
a fakeredis cluster. Where an example names what does not exist here (``f``, ``x``, a file
path, an S3 CSV, a package from PyPI) the smallest local stand-in takes its place; the
calls on rdist are the example's own. Examples where processes matter (a Semaphore shared
by tasks in worker processes, ``Environ``) are in ``tests/test_dask_examples_real.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from rdist import Client
from tests.conftest import FakeCluster


def f(x: Any) -> Any:  # the examples' ``f``
    return x + 1 if isinstance(x, int) else x


# -- Queue -------------------------------------------------------------------------------------


def test_queue_example(c: Client) -> None:
    from rdist import Queue

    client = c
    x = 41
    queue = Queue("x")
    future = client.submit(f, x)
    queue.put(future)

    # (what the example leaves to the reader: another client takes it out)
    with Client(client.redis_url, cluster_name=client.cluster_name) as other:
        taken = Queue("x", client=other).get(timeout=5)
        assert taken.result(timeout=10) == 42


# -- Variable ----------------------------------------------------------------------------------


def read_variable(v: Any) -> Any:
    return v.get(timeout=5)


def test_variable_example(c: Client) -> None:
    from rdist import Variable

    client = c
    x = Variable("x")
    x.set(123)
    assert x.get() == 123
    future = client.submit(read_variable, x)  # the example's ``f(x)``: a task reads it
    assert future.result(timeout=10) == 123
    x.set(future)
    assert x.get().result(timeout=10) == 123


# -- Lock, MultiLock, Event --------------------------------------------------------------------


def test_lock_example(c: Client) -> None:
    from rdist import Lock

    lock = Lock("x")
    assert lock.acquire(timeout=1)
    # do things with protected resource
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_multilock_example(c: Client) -> None:
    from rdist import MultiLock

    lock = MultiLock(["x", "y"])
    assert lock.acquire(timeout=1)
    # do things with protected resource 'x' and 'y'
    assert not MultiLock(["y"]).acquire(blocking=False)  # (as in dask, not a Lock's names)
    lock.release()
    other = MultiLock(["y"])
    assert other.acquire(blocking=False)
    other.release()


def test_event_example(c: Client) -> None:
    from rdist import Event

    event_1 = Event("a")
    assert not event_1.wait(timeout=1)
    # in another process (a thread here: the wait must end when it sets the event)
    woken: list[float] = []
    waiter = threading.Thread(target=lambda: woken.append(event_1.wait(timeout=10)))
    waiter.start()
    time.sleep(0.2)
    event_2 = Event("a")
    event_2.set()
    # now event_1 will stop waiting
    waiter.join(timeout=5)
    assert woken == [True]


# -- Semaphore ---------------------------------------------------------------------------------


def test_semaphore_example(c: Client) -> None:
    client = c
    from rdist import Semaphore

    sem = Semaphore(max_leases=2, name="my_database")

    def access_resource(s, sem):
        # This automatically acquires a lease from the semaphore (if available) which will be
        # released when leaving the context manager.
        with sem:
            pass

    futures = client.map(access_resource, range(10), sem=sem)
    client.gather(futures)
    # Once done, close the semaphore to clean up the state on scheduler side.
    sem.close()
    assert sem.get_value() == 0


# -- datasets ----------------------------------------------------------------------------------


def test_publish_dataset_example(c: Client) -> None:
    import dask.dataframe as dd
    import pandas as pd

    # the example's dd.read_csv('s3://...'), made here
    df = dd.from_pandas(pd.DataFrame({"a": range(10), "b": range(10, 20)}), npartitions=2)
    df = c.persist(df)
    c.publish_dataset({"my_dataset": df})

    # Receiving client:
    with Client(c.redis_url, cluster_name=c.cluster_name) as receiving:
        assert receiving.list_datasets() == ["my_dataset"]
        df2 = receiving.get_dataset("my_dataset")
        assert df2.compute()["b"].sum() == sum(range(10, 20))
    c.unpublish_dataset("my_dataset")

    # Alternative invocation
    c.publish_dataset(my_dataset=df)
    assert c.list_datasets() == ["my_dataset"]
    c.unpublish_dataset("my_dataset")
    # Alternative invocation
    c.publish_dataset(df, name="my_dataset")
    assert c.get_dataset("my_dataset").compute()["a"].sum() == 45


# -- Actor -------------------------------------------------------------------------------------


class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n


def test_actor_example(c: Client) -> None:
    client = c
    future = client.submit(Counter, actor=True)
    counter = future.result()
    assert repr(counter).startswith("<Actor: Counter, key=Counter-")

    future = counter.increment()
    assert future.result() == 1
    future = counter.increment()
    assert future.result() == 2
    assert counter.n == 2  # (the actors page: attribute access)


# -- plugins -----------------------------------------------------------------------------------


def test_worker_plugin_example(c: Client, caplog: Any) -> None:
    from rdist import WorkerPlugin

    client = c

    class ErrorLogger(WorkerPlugin):
        def __init__(self, logger):
            self.logger = logger

        def setup(self, worker):
            self.worker = worker

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "error":
                ts = self.worker.tasks[key]
                exc_info = (type(ts.exception), ts.exception, ts.traceback)
                self.logger.error("Error during computation of '%s'.", key, exc_info=exc_info)

    plugin = ErrorLogger(logging)
    client.register_plugin(plugin)

    with caplog.at_level(logging.ERROR):
        bad = client.submit(divide_by_zero, 1)
        with pytest.raises(ZeroDivisionError):
            bad.result(timeout=10)
        deadline = time.monotonic() + 5
        wanted = f"Error during computation of '{bad.key}'."
        while time.monotonic() < deadline and wanted not in caplog.messages:
            time.sleep(0.02)
    [record] = [r for r in caplog.records if r.getMessage() == wanted][:1]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError


def divide_by_zero(x: int) -> float:
    return x / 0


def test_scheduler_plugin_example(cluster_and_client: tuple[Client, FakeCluster]) -> None:
    from rdist import SchedulerPlugin

    client, cluster = cluster_and_client
    scheduler = cluster.scheduler

    class Counter(SchedulerPlugin):
        def __init__(self):
            self.counter = 0

        def transition(self, key, start, finish, *args, **kwargs):
            if start == "processing" and finish == "memory":
                self.counter += 1

        def restart(self, scheduler):
            self.counter = 0

    plugin = Counter()
    scheduler.add_plugin(plugin)

    client.gather(client.map(f, range(5)))
    deadline = time.monotonic() + 5
    while plugin.counter < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert plugin.counter == 5
    client.restart()
    assert plugin.counter == 0


def import_value(module: str) -> Any:
    import importlib

    return importlib.import_module(module).VALUE


def listing(name: str) -> list[str]:
    import os

    from rdist import get_worker

    return sorted(os.listdir(os.path.join(get_worker().local_directory, name)))


def test_upload_file_example(c: Client, tmp_path: Any) -> None:
    from rdist import UploadFile

    client = c
    path = tmp_path / "uploaded_example_module.py"  # the example's "/path/to/file.py"
    path.write_text("VALUE = 'uploaded'\n")

    client.register_plugin(UploadFile(str(path)))

    assert client.submit(import_value, "uploaded_example_module").result(timeout=10) == "uploaded"


def test_upload_directory_example(c: Client, tmp_path: Any) -> None:
    from rdist import UploadDirectory

    client = c
    directory = tmp_path / "directory"  # the example's "/path/to/directory"
    directory.mkdir()
    (directory / "data.txt").write_text("shipped\n")
    (directory / "helper.py").write_text("VALUE = 1\n")

    client.register_plugin(UploadDirectory(str(directory)))

    assert client.submit(listing, "directory").result(timeout=10) == ["data.txt", "helper.py"]


def test_pip_install_example(c: Client, tmp_path: Any) -> None:
    from rdist import PipInstall
    from tests.test_plugins import _build_wheel

    client = c
    # the example's "scikit-learn" from PyPI: a wheel built here, installed without network
    wheel = _build_wheel(tmp_path, "rdist_example_probe")
    target = tmp_path / "site"
    plugin = PipInstall(
        packages=[wheel],
        pip_options=["--upgrade", "--no-index", "--no-deps", "--target", str(target)],
    )
    client.register_plugin(plugin)

    assert (target / "rdist_example_probe" / "__init__.py").exists()
