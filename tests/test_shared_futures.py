"""Futures held by queues, variables and datasets keep their keys alive across clients
(holders at the scheduler), until taken out, replaced or deleted -- on a fakeredis cluster."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from rdist import Client, Queue, Variable
from rdist.protocol import wire
from tests.conftest import FakeCluster, fake_cluster


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
def pair() -> Iterator[tuple[Client, FakeCluster]]:
    with fake_cluster() as pair:
        yield pair


def wanters(cluster: FakeCluster, key: str) -> set[str]:
    ts = cluster.scheduler.state.tasks.get(key)
    return set(ts.who_wants) if ts is not None else set()


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def holders(cluster: FakeCluster, key: str) -> set[str]:
    return {w for w in wanters(cluster, key) if wire.is_holder(w)}


def dropped(future: Any) -> str:
    """Drop the caller's future (released at the scheduler soon); its key."""
    key = future.key
    future.release()
    gc.collect()
    return str(key)


# -- queues ---------------------------------------------------------------------------------------


def test_a_future_in_a_queue_outlives_its_client_future_until_taken_out(pair) -> None:
    c, cluster = pair
    queue = Queue("q")
    future = c.submit(inc, 1)
    queue.put(future)
    key = dropped(future)

    assert eventually(
        lambda: wanters(cluster, key) and not (wanters(cluster, key) - holders(cluster, key))
    )
    assert len(holders(cluster, key)) == 1
    with Client(cluster, set_as_default=False) as other:
        taken = Queue("q", client=other).get(timeout=5)
        assert taken.result(timeout=5) == 2
        assert eventually(lambda: wanters(cluster, key) == {other.id})
        taken.release()
        assert eventually(lambda: key not in cluster.scheduler.state.tasks)


def test_futures_may_sit_anywhere_inside_a_queued_value_beside_plain_data(pair) -> None:
    c, cluster = pair
    queue = Queue("q")
    a, b = c.submit(inc, 1), c.submit(inc, 10)
    queue.put({"first": [a, 3], "second": ("x", b), "n": None})
    keys = {dropped(a), dropped(b)}

    value = queue.get(timeout=5)

    assert value["n"] is None and value["first"][1] == 3 and value["second"][0] == "x"
    assert c.gather([value["first"][0], value["second"][1]]) == [2, 11]
    assert all(not holders(cluster, k) for k in keys)


def test_closing_the_putting_client_leaves_the_queued_future_alone(pair) -> None:
    c, cluster = pair
    with Client(cluster, set_as_default=False) as putter:
        future = putter.submit(inc, 41)
        future.result(timeout=5)
        Queue("q", client=putter).put(future)
        key = future.key
    assert eventually(
        lambda: wanters(cluster, key) and wanters(cluster, key) == holders(cluster, key)
    )

    assert Queue("q").get(timeout=5).result(timeout=5) == 42


def test_a_put_that_times_out_on_a_full_queue_gives_its_hold_up(pair) -> None:
    c, cluster = pair
    queue = Queue("q", maxsize=1)
    queue.put("filler")
    future = c.submit(inc, 1)
    with pytest.raises(TimeoutError, match="stayed full"):
        queue.put(future, timeout=0.1)
    key = dropped(future)

    assert eventually(lambda: key not in cluster.scheduler.state.tasks)


def test_a_holder_is_never_notified_nor_given_a_stream(pair) -> None:
    c, cluster = pair
    queue = Queue("q")
    future = c.submit(inc, 1)
    queue.put(future)
    future.result(timeout=5)
    late = c.submit(inc, 5)
    queue.put(late)  # put while pending: it finishes while held
    late.result(timeout=5)
    time.sleep(0.2)

    streams = [k.decode() for k in c.store.redis.keys(c.store.keys.prefix + "client:*")]
    assert not [s for s in streams if wire.HOLDER_PREFIX in s], streams


def test_a_batch_get_that_times_out_puts_what_it_took_back_in_order(pair) -> None:
    c, _ = pair
    queue = Queue("q")
    queue.put(1)
    queue.put(2)

    with pytest.raises(TimeoutError):
        queue.get(batch=3, timeout=0.2)

    assert queue.get(batch=2, timeout=1) == [1, 2]


def test_a_get_with_no_time_to_wait_still_takes_an_item_there(pair) -> None:
    c, _ = pair
    queue = Queue("q")
    queue.put("x")

    assert queue.get(timeout=0) == "x"
    with pytest.raises(TimeoutError):
        queue.get(timeout=0)


# -- variables ---------------------------------------------------------------------------------


def test_a_future_set_in_a_variable_lives_until_replaced_and_every_reader_gets_it(pair) -> None:
    c, cluster = pair
    var = Variable("v")
    future = c.submit(inc, 1)
    var.set(future)
    key = dropped(future)
    with Client(cluster, set_as_default=False) as other:
        got = Variable("v", client=other).get(timeout=5)
        again = Variable("v", client=other).get(timeout=5)
        assert got.result(timeout=5) == again.result(timeout=5) == 2
        got.release(), again.release()
        assert eventually(
            lambda: wanters(cluster, key) and wanters(cluster, key) == holders(cluster, key)
        )

    var.set("plain now")

    assert eventually(lambda: key not in cluster.scheduler.state.tasks)
    assert var.get() == "plain now"


def test_deleting_a_variable_gives_its_future_up(pair) -> None:
    c, cluster = pair
    var = Variable("v")
    future = c.submit(inc, 1)
    var.set(future)
    key = dropped(future)

    var.delete()

    assert eventually(lambda: key not in cluster.scheduler.state.tasks)


def test_a_variable_set_to_a_future_inside_a_task_is_read_by_the_client(pair) -> None:
    c, _ = pair

    def make(var: Variable) -> None:
        from rdist import get_client

        var.set(get_client().submit(inc, 99))

    c.submit(make, Variable("v")).result(timeout=10)

    assert Variable("v").get(timeout=5).result(timeout=5) == 100


def test_a_future_whose_key_is_gone_is_read_as_cancelled(pair) -> None:
    c, _ = pair
    var = Variable("v")
    var.set(c.submit(inc, 1))
    c.restart()  # cancels everything, holders' keys included (as dask's)

    with pytest.raises(Exception, match="inc"):
        var.get(timeout=5).result(timeout=5)
