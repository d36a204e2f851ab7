"""The rest of the Client (issue 12 part 4), on an in-process fakeredis cluster:
``Reschedule``, ``Future.type``, ``client.futures``, ``processing``, ``nbytes``,
``normalize_collection``, ``recreate_error_locally``, ``run(wait=False)`` and async
functions in ``run``, futures inside namedtuples and dataclasses."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import NamedTuple

import numpy as np
import pytest

import rdist
from rdist import Reschedule, futures_of
from rdist.worker import get_worker
from tests.client_helpers import calls, count_call, token, wait_gate
from tests.conftest import fake_cluster


def inc(x: int) -> int:
    return x + 1


#: bytes past the size kept in Redis: such a result lives on its worker only
LARGE = 100_000


def large(i: int) -> bytes:
    return bytes([i % 256]) * LARGE


def reschedule_first_time(name: str) -> str:
    """Raise Reschedule on the first run; the second run returns where it ran."""
    count_call(name)
    if calls(name) == 1:
        raise Reschedule()
    return get_worker().address


# -- Reschedule ------------------------------------------------------------------------------


def test_reschedule_puts_the_task_back_and_it_runs_again_without_error(c):
    name = token()

    future = c.submit(reschedule_first_time, name, pure=False)

    assert future.result(timeout=10) in c.scheduler_info()["workers"]
    assert calls(name) == 2
    assert future.status == "finished"


def test_reschedule_is_exported_with_dasks_name():
    assert rdist.Reschedule is Reschedule
    assert issubclass(Reschedule, Exception)


# -- Future.type, client.futures, processing, nbytes -----------------------------------------


class Point(NamedTuple):
    x: object
    y: object


@dataclasses.dataclass
class Box:
    item: object


def total(point: Point) -> int:
    return point.x + point.y  # type: ignore[operator,no-any-return]


def unbox(box: Box) -> object:
    return box.item


def gated(gate: str, x: int) -> int:
    wait_gate(gate)
    return x


def boom(x: int) -> int:
    raise ZeroDivisionError(f"boom {x}")


def test_future_type_is_the_result_type_once_finished(c):
    a, b = c.submit(inc, 1), c.submit(dict, a=1)

    assert a.result(timeout=10) == 2
    b.result(timeout=10)
    assert a.type is int
    assert b.type is dict


def test_future_type_of_a_non_builtin_result_is_its_class(c):
    future = c.submit(Box, 3)

    future.result(timeout=10)
    assert future.type is Box


def test_future_type_is_none_while_pending(c, gates):
    gate = gates.new()
    future = c.submit(gated, gate, 1)

    assert future.type is None
    gates.open(gate)
    future.result(timeout=10)


def test_client_futures_maps_keys_to_futures_of_this_client(c):
    a = c.submit(inc, 1, key="a")
    b = c.submit(inc, 2, key="b")

    held = c.futures

    assert set(held) == {"a", "b"}
    assert held["a"].key == a.key and held["b"].key == b.key
    del a, b


def test_processing_names_the_keys_assigned_to_each_worker(c, gates):
    gate = gates.new()
    future = c.submit(gated, gate, 1, key="slow")
    deadline = time.monotonic() + 10
    while not any(c.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.02)

    found = c.processing()

    assert set(found) == set(c.scheduler_info()["workers"])
    assert sum(found.values(), []) == ["slow"]
    gates.open(gate)
    future.result(timeout=10)
    assert not any(c.processing().values())


def test_nbytes_reports_each_result_and_summary_groups_them(c):
    futures = c.map(inc, range(3))
    c.gather(futures)

    sizes = c.nbytes()
    summary = c.nbytes(summary=True)

    assert set(sizes) == {f.key for f in futures}
    assert all(n > 0 for n in sizes.values())
    assert summary == {"inc": sum(sizes.values())}
    assert c.nbytes(futures[:1]) == {futures[0].key: sizes[futures[0].key]}


# -- futures inside namedtuples and dataclasses ----------------------------------------------


def test_futures_inside_a_namedtuple_are_dependencies(c):
    a, b = c.submit(inc, 1), c.submit(inc, 2)

    assert c.submit(total, Point(a, b)).result(timeout=10) == 5


def test_futures_inside_a_set_are_dependencies(c):
    a, b = c.submit(inc, 1), c.submit(inc, 2)

    assert c.submit(sorted, {a, b}).result(timeout=10) == [2, 3]


def test_a_future_inside_a_dataclass_is_a_dependency(c):
    a = c.submit(inc, 10)

    assert c.submit(unbox, Box(a)).result(timeout=10) == 11


# -- recreate_error_locally --------------------------------------------------------------------


def test_recreate_error_locally_raises_the_tasks_error_here(c):
    a = c.submit(inc, 1)
    bad = c.submit(boom, a)

    with pytest.raises(ZeroDivisionError, match="boom 2"):
        c.recreate_error_locally(bad)


def test_recreate_error_locally_runs_the_blamed_dependency(c):
    bad = c.submit(boom, 5)
    after = c.submit(inc, bad)

    with pytest.raises(ZeroDivisionError, match="boom 5"):
        c.recreate_error_locally(after)


def test_recreate_error_locally_refuses_a_future_that_did_not_fail(c):
    ok = c.submit(inc, 1)

    with pytest.raises(ValueError, match="did not fail"):
        c.recreate_error_locally(ok)


# -- run ----------------------------------------------------------------------------------------

_RAN: list[str] = []


def note(tag: str) -> None:
    _RAN.append(tag)


async def async_address() -> str:
    await asyncio.sleep(0.01)
    return get_worker().address


def test_run_with_wait_false_returns_none_at_once_and_runs(c):
    tag = token()

    assert c.run(note, tag, wait=False) is None
    deadline = time.monotonic() + 10
    while _RAN.count(tag) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _RAN.count(tag) == 2


def test_run_of_an_async_function_runs_it_on_the_workers_loop(c):
    found = c.run(async_address)

    assert found == {a: a for a in c.scheduler_info()["workers"]}


# -- Future.release ------------------------------------------------------------------------------


def test_future_release_drops_this_reference(c):
    a = c.submit(inc, 1, key="rel")
    a.result(timeout=10)

    a.release()

    deadline = time.monotonic() + 10
    while "rel" in c.who_has() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "rel" not in c.futures


def address_of(dask_worker: object) -> str:
    return dask_worker.address  # type: ignore[attr-defined,no-any-return]


def test_run_passes_the_worker_as_dask_worker(c):
    found = c.run(address_of)

    assert found == {a: a for a in c.scheduler_info()["workers"]}


# -- normalize_collection ----------------------------------------------------------------------


def test_normalize_collection_uses_the_futures_this_client_holds(c):
    da = pytest.importorskip("dask.array")
    x = da.arange(12, chunks=4) + 1
    held = c.persist(x)
    c.gather(futures_of(held))
    y = (x + 1).sum()

    normalized = c.normalize_collection(y)

    graph = dict(normalized.__dask_graph__())
    reused = [v for v in graph.values() if isinstance(v, rdist.Future)]
    assert {f.key for f in reused} == {f.key for f in futures_of(held)}
    assert c.compute(normalized).result(timeout=20) == int(((np.arange(12) + 1) + 1).sum())


def test_normalize_collection_without_held_futures_is_the_collection(c):
    da = pytest.importorskip("dask.array")
    x = da.ones(4, chunks=2)

    assert c.normalize_collection(x) is x


# -- retire_workers (in-process workers) -------------------------------------------------------


def test_retire_workers_moves_data_first_and_the_worker_leaves():
    with fake_cluster(n_workers=3) as (c, cluster):
        futures = c.map(large, range(12))
        c.gather(futures)
        victim = cluster.workers[0].address
        held_there = [k for k, ws in c.who_has().items() if ws == [victim]]

        retired = c.retire_workers([victim])

        assert set(retired) == {victim}
        assert victim not in c.scheduler_info()["workers"]
        assert c.gather(futures) == [large(i) for i in range(12)]
        assert all(victim not in ws for ws in c.who_has().values())
        assert held_there  # the test moved something
        assert cluster.workers[0].stop_event.is_set()  # it closed


def test_retire_workers_accepts_names_and_places_later_tasks_elsewhere():
    with fake_cluster(n_workers=2) as (c, cluster):
        name, other = cluster.workers[0].name, cluster.workers[1].address
        a = c.submit(large, 1, workers=[name])
        a.result(timeout=10)

        retired = c.retire_workers(workers=[name])

        assert list(retired) == [cluster.workers[0].address]
        assert c.who_has(a)[a.key] == [other]
        assert a.result(timeout=10) == large(1)
        assert c.submit(len, a).result(timeout=10) == LARGE


def test_retire_workers_without_a_worker_to_stay_retires_nothing():
    with fake_cluster(n_workers=1) as (c, cluster):
        a = c.submit(large, 1)
        a.result(timeout=10)

        assert c.retire_workers([cluster.workers[0].address]) == {}
        assert a.result(timeout=10) == large(1)
        assert len(c.scheduler_info()["workers"]) == 1


def test_retire_workers_of_none_retires_idle_workers_but_keeps_one():
    with fake_cluster(n_workers=3) as (c, _):
        retired = c.retire_workers()

        assert len(retired) == 2
        assert len(c.scheduler_info()["workers"]) == 1


def test_draining_without_close_keeps_the_worker_but_gives_it_no_task():
    with fake_cluster(n_workers=2) as (c, cluster):
        drained, other = cluster.workers[0].address, cluster.workers[1].address

        c.retire_workers([drained], close_workers=False, remove=False)
        futures = c.map(inc, range(6), pure=False)
        c.gather(futures)

        assert drained in c.scheduler_info()["workers"]
        assert {w for ws in c.who_has(futures).values() for w in ws} == {other}
