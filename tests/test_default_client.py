"""A Client is dask's scheduler while it is open, as in dask.distributed: plain
``compute``/``persist``/``dask.compute`` run on the cluster (checked by where the task ran,
not only by the answer), and closing it brings back what was there before."""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Iterator

import pytest

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

from rdist import Client, Future, default_client, futures_of, get_worker  # noqa: E402
from rdist.client.default import DEFAULT_SCHEDULER  # noqa: E402
from tests.conftest import FakeCluster, fake_cluster  # noqa: E402


def where() -> str:
    """The worker that ran this, or ``local`` off the cluster."""
    try:
        return get_worker().address
    except ValueError:
        return "local"


@contextlib.contextmanager
def bare_cluster() -> Iterator[FakeCluster]:
    """A one-worker fakeredis cluster with no client of its own."""
    cluster = FakeCluster(1, 1)
    try:
        yield cluster
    finally:
        cluster.close()


def addresses(client: Client) -> set[str]:
    return set(client.scheduler_info()["workers"])


def test_collection_built_before_the_client_computes_on_the_cluster() -> None:
    task = dask.delayed(where)()
    assert task.compute() == "local"
    with fake_cluster() as (client, _):
        assert task.compute() in addresses(client)
        (value,) = dask.compute(task)
        assert value in addresses(client)
    assert task.compute() == "local"


def test_persist_keeps_the_data_on_the_cluster_as_futures() -> None:
    with fake_cluster() as (client, _):
        x = da.arange(100, chunks=25) + 1
        persisted = x.persist()
        futures = futures_of(persisted)
        assert len(futures) == 4 and all(isinstance(f, Future) for f in futures)
        assert int(persisted.sum().compute()) == sum(range(1, 101))
        (again,) = dask.persist(x)
        assert all(isinstance(f, Future) for f in futures_of(again))


@pytest.mark.parametrize("how", ["client", "client.get", "config"])
def test_a_client_named_as_the_scheduler_runs_the_work(how: str) -> None:
    with fake_cluster() as (client, _):
        task = dask.delayed(where)()
        if how == "config":
            with dask.config.set(scheduler=client):
                value = task.compute()
        else:
            value = task.compute(scheduler=client if how == "client" else client.get)
        assert value in addresses(client)


def test_set_as_default_false_leaves_dask_alone() -> None:
    with bare_cluster() as cluster:
        client = Client(cluster, set_as_default=False)
        try:
            assert dask.delayed(where)().compute() == "local"
            with pytest.raises(ValueError, match="No client found"):
                default_client()
        finally:
            client.close()


def test_defaults_stack_and_the_previous_setting_returns() -> None:
    with dask.config.set(scheduler="sync"), bare_cluster() as cluster:
        first = Client(cluster)
        second = Client(cluster)
        assert default_client() is second and Client.current() is second
        second.close()
        assert default_client() is first
        assert dask.config.get("scheduler") is DEFAULT_SCHEDULER
        first.close()
        assert dask.config.get("scheduler") == "sync"
        with pytest.raises(ValueError, match="No client found"):
            Client.current()


def test_a_setting_made_while_the_client_was_open_survives_its_close() -> None:
    with bare_cluster() as cluster:
        client = Client(cluster)
        dask.config.set(scheduler="threads")
        try:
            client.close()
            assert dask.config.get("scheduler") == "threads"
        finally:
            dask.config.config.pop("scheduler", None)


def test_as_current_is_per_thread() -> None:
    with bare_cluster() as cluster:
        main = Client(cluster)
        other = Client(cluster, set_as_default=False)
        seen: list[Client] = []
        try:
            with other.as_current():
                assert Client.current() is other and default_client() is other
                thread = threading.Thread(target=lambda: seen.append(Client.current()))
                thread.start()
                thread.join()
            assert seen == [main]
            assert Client.current() is main
            with pytest.raises(ValueError, match="No client found"):
                Client.current(allow_global=False)  # no as_current() block here
        finally:
            other.close()
            main.close()


def test_the_default_scheduler_survives_dask_copying_its_config() -> None:
    import copy

    assert copy.deepcopy(DEFAULT_SCHEDULER) is DEFAULT_SCHEDULER
    assert pickle.loads(pickle.dumps(DEFAULT_SCHEDULER)) is DEFAULT_SCHEDULER


IMPORTED_LATE = """
import sys
from rdist import Client, get_worker
from tests.conftest import FakeCluster

cluster = FakeCluster(1, 1)
client = Client(cluster.url, cluster_name=cluster.cluster_name)
assert "dask" not in sys.modules, "a client must not import dask itself (a third of a second)"
import dask

def where():
    return get_worker().address

print(dask.delayed(where)().compute() in client.scheduler_info()["workers"])
client.close()
print(dask.config.get("scheduler", None))
cluster.close()
"""


def test_dask_imported_after_the_client_still_computes_on_it() -> None:
    """The client does not pay for importing dask; importing it later still finds the client
    as its scheduler, and closing the client gives dask its own setting back."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_LATE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "None"]
