"""Data, placement, restrictions and introspection (CONTRACT items 22-24 and 30), on an
in-process fakeredis cluster of two one-thread workers named w0 and w1."""

from __future__ import annotations

import threading

import pytest

from rdist import Future, get_worker, wait
from tests.client_helpers import token, wait_until
from tests.conftest import fake_cluster

BIG = 2 << 20  #: bytes: well past the scheduler's locality threshold

_BARRIERS: dict[str, threading.Barrier] = {}


def inc(x: int) -> int:
    return x + 1


def where(*args: object) -> str:
    """The address of the worker running this task."""
    return get_worker().address


def make_big(tag: int = 0) -> bytes:
    return bytes([tag]) * BIG


def meet(name: str, i: int) -> str:
    """Return only once both tasks of ``name`` run at the same time."""
    _BARRIERS[name].wait(timeout=5)
    return get_worker().address


def worker_name(suffix: str = "", *, upper: bool = False) -> str:
    name = get_worker().name + suffix
    return name.upper() if upper else name


def fail() -> None:
    raise ValueError("run failed")


def barrier(c) -> None:
    """Return once the scheduler has handled everything ``c`` sent before (streams are FIFO)."""
    c.submit(str, token()).result(timeout=10)


@pytest.fixture
def cw(cluster_and_client):
    """(client, cluster, w0, w1)."""
    c, cluster = cluster_and_client
    w0, w1 = sorted(cluster.workers, key=lambda w: w.name)
    return c, cluster, w0, w1


# -- 22. scatter -----------------------------------------------------------------------------


def test_scatter_list_returns_a_list_of_finished_futures(c):
    futures = c.scatter([1, 2, 3])

    assert isinstance(futures, list) and len(futures) == 3
    assert all(isinstance(f, Future) and f.status == "finished" for f in futures)
    assert c.gather(futures) == [1, 2, 3]


def test_scatter_dict_returns_futures_keyed_as_given(c):
    futures = c.scatter({"a": 1, "b": [2, 3]})

    assert set(futures) == {"a", "b"}
    assert futures["a"].key == "a"
    assert c.gather(futures) == {"a": 1, "b": [2, 3]}


def test_scatter_one_object_returns_one_future(c):
    future = c.scatter(1)

    assert isinstance(future, Future)
    assert future.done()
    assert future.result(timeout=10) == 1


def test_scattered_futures_are_task_inputs(c):
    data = c.scatter([10, 20])

    assert c.gather(c.map(inc, data)) == [11, 21]


def test_scattered_large_object_round_trips(c):
    numpy = pytest.importorskip("numpy")
    array = numpy.arange(200_000)

    future = c.scatter(array)

    assert (future.result(timeout=10) == array).all()
    assert c.submit(numpy.sum, future).result(timeout=10) == array.sum()


def test_scatter_broadcast_copies_to_every_worker(cw):
    c, cluster, w0, w1 = cw

    future = c.scatter(make_big(), broadcast=True)

    assert future.key in w0.data and future.key in w1.data
    assert sorted(c.who_has(future)[future.key]) == sorted([w0.address, w1.address])


def test_scatter_without_broadcast_places_each_object_once(cw):
    c, cluster, w0, w1 = cw

    futures = c.scatter(list(range(4)))

    holders = [[w.name for w in (w0, w1) if f.key in w.data] for f in futures]
    assert all(len(h) == 1 for h in holders)
    assert {h[0] for h in holders} == {"w0", "w1"}


def test_scatter_to_workers_by_address_or_name(cw):
    c, cluster, w0, w1 = cw

    by_address = c.scatter([1, 2, 3], workers=[w1.address])
    by_name = c.scatter({"n": 4}, workers="w0")

    assert all(f.key in w1.data and f.key not in w0.data for f in by_address)
    assert by_name["n"].key == "n" and "n" in w0.data and "n" not in w1.data


# -- 23. worker restrictions -----------------------------------------------------------------


def test_workers_by_address_run_only_there(cw):
    c, cluster, w0, w1 = cw

    futures = c.map(where, range(8), workers=[w1.address])

    assert set(c.gather(futures)) == {w1.address}


def test_workers_by_name_run_only_there(cw):
    c, cluster, w0, w1 = cw

    futures = c.map(where, range(8), workers=["w0"])

    assert set(c.gather(futures)) == {w0.address}


def test_restricted_task_waits_for_an_allowed_worker_to_join(cw):
    c, cluster, w0, w1 = cw
    future = c.submit(where, 1, workers=["late"])
    barrier(c)
    assert not future.done()
    assert cluster.scheduler.state.tasks[future.key].state.value == "no-worker"

    late = cluster.add_worker(name="late")

    assert future.result(timeout=10) == late.address


def test_restricted_task_waits_when_its_worker_has_left(cw):
    c, cluster, w0, w1 = cw
    gone = cluster.add_worker(name="gone")
    c.wait_for_workers(3, timeout=10)
    gone.close()
    wait_until(lambda: gone.address not in cluster.scheduler.state.workers)

    future = c.submit(where, 2, workers=["gone"])
    barrier(c)
    assert not future.done()

    back = cluster.add_worker(name="gone")
    assert future.result(timeout=10) == back.address


def test_allow_other_workers_runs_elsewhere_when_the_allowed_are_absent(cw):
    c, cluster, w0, w1 = cw

    future = c.submit(where, 3, workers=["ghost"], allow_other_workers=True)

    assert future.result(timeout=10) in {w0.address, w1.address}


def test_allow_other_workers_still_prefers_the_named_worker(cw):
    c, cluster, w0, w1 = cw

    futures = [c.submit(where, i, workers=[w1.address], allow_other_workers=True) for i in range(3)]

    assert wait(futures, timeout=10).not_done == set()
    assert c.gather(futures)[0] == w1.address


# -- 24. spreading and locality --------------------------------------------------------------


def test_independent_tasks_run_on_both_workers_at_once(cw):
    c, cluster, w0, w1 = cw
    name = token()
    _BARRIERS[name] = threading.Barrier(2)

    futures = [c.submit(meet, name, i) for i in range(2)]

    assert set(c.gather(futures)) == {w0.address, w1.address}


def test_many_independent_tasks_use_every_worker(cw):
    c, cluster, w0, w1 = cw

    futures = c.map(where, range(20), pure=False)

    assert set(c.gather(futures)) == {w0.address, w1.address}


@pytest.mark.parametrize("holder", ["w0", "w1"])
def test_task_runs_where_its_big_scattered_input_is(cw, holder):
    c, cluster, *workers = cw
    target = next(w for w in workers if w.name == holder)
    big = c.scatter(make_big(), workers=[target.address])

    assert c.submit(where, big).result(timeout=10) == target.address


@pytest.mark.parametrize("holder", ["w0", "w1"])
def test_task_runs_where_its_big_computed_input_is(cw, holder):
    c, cluster, *workers = cw
    target = next(w for w in workers if w.name == holder)
    big = c.submit(make_big, workers=[holder])

    assert c.submit(where, big).result(timeout=10) == target.address


def test_task_runs_where_most_of_its_input_bytes_are(cw):
    c, cluster, w0, w1 = cw
    small = c.scatter([1, 2, 3], workers=[w0.address])
    big = c.scatter(make_big(), workers=[w1.address])

    assert c.submit(where, small, big).result(timeout=10) == w1.address


# -- 30. introspection -----------------------------------------------------------------------


def test_who_has_maps_keys_to_the_addresses_holding_them(cw):
    """Right after scatter too: as in dask, scatter's placement is known when it returns."""
    c, cluster, w0, w1 = cw
    scattered = c.scatter(5, workers=[w1.address])
    computed = c.submit(inc, 1, workers=[w0.address])
    computed.result(timeout=10)

    assert c.who_has([scattered, computed]) == {
        scattered.key: [w1.address],
        computed.key: [w0.address],
    }
    assert c.who_has(scattered) == {scattered.key: [w1.address]}
    assert {scattered.key, computed.key} <= set(c.who_has())


def test_has_what_maps_addresses_to_the_keys_they_hold(cw):
    c, cluster, w0, w1 = cw
    scattered = c.scatter(5, workers=[w1.address])
    computed = c.submit(inc, 1, workers=["w0"])
    computed.result(timeout=10)

    has_what = c.has_what()

    assert set(has_what) == {w0.address, w1.address}
    assert computed.key in has_what[w0.address] and scattered.key in has_what[w1.address]
    assert scattered.key not in has_what[w0.address]
    assert set(c.has_what(workers=[w1.address])) == {w1.address}


def test_nthreads_maps_each_worker_address_to_its_threads():
    with fake_cluster(n_workers=2, nthreads=3) as (c, cluster):
        addresses = sorted(w.address for w in cluster.workers)

        assert c.nthreads() == {a: 3 for a in addresses}
        assert c.nthreads(workers=[addresses[0]]) == {addresses[0]: 3}


def test_scheduler_info_lists_workers_by_address(cw):
    c, cluster, w0, w1 = cw

    info = c.scheduler_info()

    assert set(info["workers"]) == {w0.address, w1.address}
    assert info["workers"][w1.address]["name"] == "w1"
    assert info["workers"][w0.address]["nthreads"] == 1


def test_run_calls_a_function_on_every_worker(cw):
    c, cluster, w0, w1 = cw

    assert c.run(worker_name) == {w0.address: "w0", w1.address: "w1"}
    assert c.run(worker_name, "-x", upper=True) == {w0.address: "W0-X", w1.address: "W1-X"}


def test_run_restricted_to_some_workers(cw):
    c, cluster, w0, w1 = cw

    assert c.run(worker_name, workers=[w1.address]) == {w1.address: "w1"}
    assert c.run(worker_name, workers=["w0"]) == {w0.address: "w0"}


def test_run_reports_what_the_workers_hold(cw):
    c, cluster, w0, w1 = cw
    future = c.submit(inc, 1, workers=["w1"])
    future.result(timeout=10)

    held = c.run(lambda: sorted(get_worker().data))

    assert future.key in held[w1.address] and future.key not in held[w0.address]


def test_run_raises_the_remote_exception(c):
    with pytest.raises(ValueError, match="run failed"):
        c.run(fail)


def test_wait_for_workers_returns_once_enough_have_joined(cw):
    c, cluster, w0, w1 = cw
    threading.Timer(0.1, cluster.add_worker, kwargs={"name": "w2"}).start()

    c.wait_for_workers(3, timeout=10)

    assert len(c.scheduler_info()["workers"]) == 3
    wait_until(lambda: len(cluster.workers) == 3)


def test_wait_for_workers_times_out(c):
    with pytest.raises(TimeoutError):
        c.wait_for_workers(5, timeout=0.2)
