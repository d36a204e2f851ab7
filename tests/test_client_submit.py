"""Submission and keys (CONTRACT items 1-6), on an in-process fakeredis cluster."""

from __future__ import annotations

import operator

import pytest

from rdist import Client, Future
from tests.client_helpers import calls, count_call, token, wait_gate


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int = 0) -> int:
    return x + y


def gated_inc(gate: str, x: int) -> int:
    wait_gate(gate)
    return x + 1


def counted_inc(name: str, x: int) -> int:
    count_call(name)
    return x + 1


def counted_gated_inc(name: str, gate: str, x: int) -> int:
    count_call(name)
    wait_gate(gate)
    return x + 1


def describe(*args: object, **kwargs: object) -> tuple[object, object]:
    return args, kwargs


# -- 1. submit / result ----------------------------------------------------------------------


def test_submit_returns_pending_future_before_the_task_ends(c, gates):
    gate = gates.new()

    future = c.submit(gated_inc, gate, 1)

    assert isinstance(future, Future)
    assert not future.done()
    assert future.status == "pending"
    gates.open(gate)
    assert future.result(timeout=10) == 2


def test_result_is_func_of_args_and_kwargs_then_future_is_finished(c):
    future = c.submit(add, 1, y=10)

    assert future.result(timeout=10) == 11
    assert future.done()
    assert future.status == "finished"


# -- 2. futures as arguments -----------------------------------------------------------------


def test_futures_nested_in_args_and_kwargs_are_replaced_by_values(c):
    a, b, d = c.submit(inc, 1), c.submit(inc, 2), c.submit(inc, 3)

    result = c.submit(describe, [a, (b, {"k": d})], 7, opt={"x": [a]}).result(timeout=10)

    assert result == (([2, (3, {"k": 4})], 7), {"opt": {"x": [2]}})


def test_futures_in_arguments_become_dependencies(cluster_and_client):
    c, cluster = cluster_and_client
    a, b = c.submit(inc, 1), c.submit(inc, 2)

    total = c.submit(add, a, y=b)

    assert total.result(timeout=10) == 5
    assert cluster.scheduler.state.tasks[total.key].dependencies == {a.key, b.key}


def test_a_dependency_chain_runs_in_order(c):
    x = c.submit(inc, 0)
    for _ in range(9):
        x = c.submit(inc, x)

    assert x.result(timeout=10) == 10


# -- 3. pure and impure keys -----------------------------------------------------------------


def test_pure_submissions_of_same_call_share_a_key_and_run_once(c):
    name = token()

    first = c.submit(counted_inc, name, 1)
    second = c.submit(counted_inc, name, 1)

    assert first.key == second.key
    assert first.result(timeout=10) == second.result(timeout=10) == 2
    assert calls(name) == 1


def test_two_clients_submitting_the_same_pure_call_run_it_once(cluster_and_client, gates):
    c, cluster = cluster_and_client
    name, gate = token(), gates.new()
    with Client(cluster, set_as_default=False) as other:
        mine = c.submit(counted_gated_inc, name, gate, 1)
        theirs = other.submit(counted_gated_inc, name, gate, 1)
        gates.open(gate)

        assert mine.key == theirs.key
        assert theirs.result(timeout=10) == mine.result(timeout=10) == 2
        assert calls(name) == 1


def test_impure_submissions_get_fresh_keys_and_run_each_time(c):
    name = token()

    futures = [c.submit(counted_inc, name, 1, pure=False) for _ in range(3)]

    assert len({f.key for f in futures}) == 3
    assert c.gather(futures) == [2, 2, 2]
    assert calls(name) == 3


def test_different_arguments_give_different_keys(c):
    assert c.submit(inc, 1).key != c.submit(inc, 2).key


# -- 4. explicit keys ------------------------------------------------------------------------


def test_submit_key_is_used_verbatim(cluster_and_client):
    c, cluster = cluster_and_client

    future = c.submit(inc, 1, key="my-key")

    assert future.key == "my-key"
    assert future.result(timeout=10) == 2
    assert "my-key" in cluster.scheduler.state.tasks


def test_map_string_key_is_a_prefix(c):
    futures = c.map(inc, [1, 2, 3], key="step")

    assert all(f.key.startswith("step-") for f in futures)
    assert len({f.key for f in futures}) == 3
    assert c.gather(futures) == [2, 3, 4]


def test_map_list_of_keys_names_each_task(c):
    futures = c.map(inc, [1, 2], key=["one", "two"])

    assert [f.key for f in futures] == ["one", "two"]
    assert c.gather(futures) == [2, 3]


# -- 5. map ----------------------------------------------------------------------------------


def test_map_zips_iterables_and_truncates_to_the_shortest(c):
    futures = c.map(add, [1, 2, 3], [10, 20])

    assert c.gather(futures) == [11, 22]


def test_map_passes_kwargs_to_every_call(c):
    assert c.gather(c.map(add, [1, 2], y=100)) == [101, 102]


def test_map_accepts_iterators(c):
    assert c.gather(c.map(inc, iter(range(3)))) == [1, 2, 3]
    assert c.gather(c.map(add, (i for i in range(3)), iter([5, 5, 5]))) == [5, 6, 7]


def test_map_of_empty_list_is_empty(c):
    assert c.map(inc, []) == []


def test_map_accepts_futures_as_elements(c):
    xs = c.map(inc, range(3))

    assert c.gather(c.map(inc, xs)) == [2, 3, 4]


# -- 6. raw graphs and dask collections ------------------------------------------------------


def test_get_runs_tuple_tasks_aliases_and_literals_in_the_shape_of_keys(c):
    dsk = {
        "a": 1,
        "b": (inc, "a"),
        "c": (operator.add, "a", "b"),
        "alias": "c",
        "total": (sum, ["a", "b", "c"]),
        ("x", 0): (inc, "b"),
    }

    assert c.get(dsk, "b") == 2
    assert c.get(dsk, ["alias", ["total", ("x", 0)]]) == [3, [6, 3]]


def test_get_twice_with_the_same_keys_recomputes(c):
    dsk = {"a": 1, "b": (inc, "a")}

    assert c.get(dsk, "b") == 2
    assert c.get(dsk, ["b", "a"]) == [2, 1]


def test_get_raises_the_task_exception(c):
    with pytest.raises(ZeroDivisionError):
        c.get({"a": (operator.truediv, 1, 0)}, "a")


def test_dask_compute_runs_delayed_through_client_get(c):
    dask = pytest.importorskip("dask")
    x = dask.delayed(inc)(1)
    y = dask.delayed(add)(x, y=10)

    assert dask.compute(y, x, scheduler=c.get) == (12, 2)


def test_dask_compute_runs_array_reductions_through_client_get(c):
    da = pytest.importorskip("dask.array")
    pytest.importorskip("numpy")

    assert da.arange(10, chunks=3).sum().compute(scheduler=c.get) == 45


def _raises_deep(x: int) -> int:
    return _raises_here(x)


def _raises_here(x: int) -> int:
    raise ZeroDivisionError(f"no {x}")


def test_an_erred_future_gives_a_traceback_object_of_the_task(c) -> None:
    import traceback

    future = c.submit(_raises_deep, 3)
    with pytest.raises(ZeroDivisionError, match="no 3") as info:
        future.result(timeout=10)
    names = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert names[-2:] == ["_raises_deep", "_raises_here"]  # the task's frames, raised here
    tb = future.traceback()
    assert [f.name for f in traceback.extract_tb(tb)][-2:] == ["_raises_deep", "_raises_here"]
    assert "raise ZeroDivisionError" in "".join(traceback.format_tb(tb))
    assert c.submit(_raises_here, 1).exception(timeout=10).args == ("no 1",)
    assert c.submit(int, 1).traceback(timeout=10) is None
