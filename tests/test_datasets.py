"""Published datasets on a fakeredis cluster: dask's calls and rules, and published futures
and persisted collections staying computed after the publishing client leaves."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from rdist import Client
from rdist.protocol import wire
from tests.conftest import FakeCluster, fake_cluster


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
def pair() -> Iterator[tuple[Client, FakeCluster]]:
    with fake_cluster() as pair:
        yield pair


def test_publish_get_list_and_unpublish_follow_dasks_calls(pair) -> None:
    c, _ = pair
    c.publish_dataset(x=[1, 2, 3], y="text")
    c.publish_dataset({"z": 5})
    c.publish_dataset(7, name="named")

    assert sorted(c.list_datasets()) == ["named", "x", "y", "z"]
    assert c.get_dataset("x") == [1, 2, 3]
    assert c.get_dataset("named") == 7
    c.unpublish_dataset("y")
    assert "y" not in c.list_datasets()
    with pytest.raises(KeyError, match="not found"):
        c.get_dataset("y")
    assert c.get_dataset("y", default=None) is None


def test_a_name_taken_is_refused_unless_overridden(pair) -> None:
    c, _ = pair
    c.publish_dataset(x=1)

    with pytest.raises(KeyError, match="already exists"):
        c.publish_dataset(x=2)
    c.publish_dataset(x=3, override=True)

    assert c.get_dataset("x") == 3


def test_the_datasets_mapping_reads_writes_and_deletes(pair) -> None:
    c, _ = pair
    c.datasets["a"] = {"k": 1}

    assert "a" in c.datasets and len(c.datasets) == 1 and list(c.datasets) == ["a"]
    assert c.datasets["a"] == {"k": 1}
    del c.datasets["a"]
    assert "a" not in c.datasets


def test_a_published_future_stays_computed_after_its_client_leaves(pair) -> None:
    c, cluster = pair
    with Client(cluster, set_as_default=False) as publisher:
        future = publisher.submit(inc, 1)
        future.result(timeout=5)
        publisher.publish_dataset(result=future)
        key = future.key
        del future
        gc.collect()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        wants = cluster.scheduler.state.tasks[key].who_wants
        if wants and all(wire.is_holder(w) for w in wants):
            break
        time.sleep(0.02)
    assert cluster.scheduler.state.tasks[key].state == "memory"
    assert c.get_dataset("result").result(timeout=5) == 2


def test_unpublishing_a_future_lets_its_key_go(pair) -> None:
    c, cluster = pair
    future = c.submit(inc, 1)
    c.publish_dataset(f=future)
    key = future.key
    future.release()
    del future
    gc.collect()

    c.unpublish_dataset("f")

    deadline = time.monotonic() + 5
    while key in cluster.scheduler.state.tasks and time.monotonic() < deadline:
        time.sleep(0.02)
    assert key not in cluster.scheduler.state.tasks


def test_a_persisted_collection_published_is_read_by_another_client(pair) -> None:
    da = pytest.importorskip("dask.array")
    c, cluster = pair
    with Client(cluster, set_as_default=False) as publisher:
        x = publisher.persist(da.arange(10, chunks=5) + 1)
        publisher.publish_dataset(arr=x)
        del x
        gc.collect()

    got = c.get_dataset("arr")

    assert got.sum().compute(scheduler=c.get) == 55
