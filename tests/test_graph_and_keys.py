"""The Redis key schema, and turning user calls and raw graphs into specs (no Redis)."""

from __future__ import annotations

import functools
import inspect
import operator
import pickle
import threading
from collections.abc import Hashable
from typing import Any

import pytest

from rdist.client import graph
from rdist.client.graph import SubmitError
from rdist.protocol import serialize, spec
from rdist.protocol.spec import DepRef
from rdist.store.keys import Keys

# -- key schema --------------------------------------------------------------------------


def all_keys(keys: Keys) -> dict[str, str]:
    """Every key name the schema can build, found by introspection so new ones are covered."""
    out: dict[str, str] = {}
    for name, member in inspect.getmembers(type(keys)):
        if name.startswith("_"):
            continue
        if isinstance(member, (property, functools.cached_property)):
            out[name] = getattr(keys, name)
        elif inspect.isfunction(member):
            out[name] = getattr(keys, name)("tcp://10.0.0.1:9001")
    return out


def test_schema_covers_the_documented_streams_and_hashes():
    names = set(all_keys(Keys()))

    assert {
        "sched",
        "worker_stream",
        "client_stream",
        "heartbeats",
        "events",
        "deadletter",
        "workers",
        "tasks",
        "specs",
        "funcs",
        "results",
        "clients",
        "meta",
    } <= names


@pytest.mark.parametrize("cluster", ["default", "prod", "team-a:blue"])
def test_every_key_of_a_cluster_shares_its_hash_tagged_prefix(cluster):
    keys = Keys(cluster)

    for name, key in all_keys(keys).items():
        assert key.startswith(f"rdist:{{{cluster}}}:"), name
        # Redis Cluster hashes only the text between the first '{' and the next '}'
        start = key.index("{") + 1
        assert key[start : key.index("}", start)] == cluster, name


def test_keys_of_two_clusters_never_collide():
    for first, second in [("a", "b"), ("a", "ab"), ("default", "default2")]:
        one, two = all_keys(Keys(first)), all_keys(Keys(second))
        assert not set(one.values()) & set(two.values()), (first, second)


def test_keys_within_a_cluster_are_distinct():
    built = all_keys(Keys("c"))

    assert len(set(built.values())) == len(built)


def test_per_worker_and_per_client_streams_are_distinct():
    keys = Keys("c")

    assert keys.worker_stream("x") != keys.client_stream("x")
    assert keys.worker_stream("x") != keys.worker_stream("y")


def test_default_cluster_key_names():
    assert Keys().sched == "rdist:{default}:sched"
    assert Keys("c").worker_stream("tcp://h:1") == "rdist:{c}:worker:tcp://h:1"


# -- raw task graphs ---------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def run_graph(dsk: dict[Hashable, Any]) -> dict[str, Any]:
    """Evaluate ``graph_tasks`` output in the order given, as workers would."""
    data: dict[str, Any] = {}
    for key, blob, deps in graph.graph_tasks(dsk)[0]:
        assert all(d in data for d in deps), f"{key} comes before its dependencies {deps}"
        data[key] = spec.evaluate_node(serialize.from_blob(blob), {d: data[d] for d in deps})
    return data


def deps_of(dsk: dict[Hashable, Any]) -> dict[str, list[str]]:
    return {key: deps for key, _, deps in graph.graph_tasks(dsk)[0]}


def test_graph_tasks_lists_dependencies_before_dependents():
    dsk = {"z": (operator.add, "y", "x"), "y": (inc, "x"), "x": 1}

    order = [key for key, _, _ in graph.graph_tasks(dsk)[0]]

    assert order.index("x") < order.index("y") < order.index("z")
    assert run_graph(dsk)["z"] == 3


def test_graph_tasks_extracts_dependencies_of_tuple_tasks_lists_and_aliases():
    dsk = {
        "x": 1,
        "y": (inc, "x"),
        "z": (operator.add, "y", "x"),
        "alias": "z",
        "many": ["x", "y", (inc, "z")],
    }

    assert deps_of(dsk) == {
        "x": [],
        "y": ["x"],
        "z": ["y", "x"],
        "alias": ["z"],
        "many": ["x", "y", "z"],
    }
    values = run_graph(dsk)
    assert (values["alias"], values["many"]) == (3, [1, 2, 4])


def test_tuple_keys_are_named_by_their_repr_and_resolved_as_dependencies():
    dsk = {("x", 0): 10, ("x", 1): (inc, ("x", 0)), "total": (sum, [("x", 0), ("x", 1)])}

    assert deps_of(dsk) == {
        "('x', 0)": [],
        "('x', 1)": ["('x', 0)"],
        "total": ["('x', 0)", "('x', 1)"],
    }
    assert run_graph(dsk)["total"] == 21


def test_nested_tasks_inside_arguments_are_evaluated_in_place():
    dsk = {"x": 2, "y": (operator.mul, (inc, "x"), (inc, (inc, "x")))}

    assert deps_of(dsk)["y"] == ["x"]
    assert run_graph(dsk)["y"] == 12


def test_strings_that_are_not_keys_stay_literals():
    dsk = {"x": (str.upper, "hello"), "y": (operator.add, "x", "!")}

    assert deps_of(dsk) == {"x": [], "y": ["x"]}
    assert run_graph(dsk)["y"] == "HELLO!"


def test_literal_values_and_dicts_pass_through():
    dsk = {"n": 5, "d": (dict, [["a", "n"]]), "t": ("not", "a", "task")}

    values = run_graph(dsk)

    assert values == {"n": 5, "d": {"a": 5}, "t": ("not", "a", "task")}


def test_a_dependency_used_twice_is_listed_once():
    assert deps_of({"x": 1, "y": (operator.add, "x", "x")})["y"] == ["x"]


def test_long_graph_chain_is_sorted_without_recursion_error():
    n = 5_000
    dsk: dict[Hashable, Any] = {f"k{i}": (inc, f"k{i - 1}") for i in range(n - 1, 0, -1)}
    dsk["k0"] = 0

    order = [key for key, _, _ in graph.graph_tasks(dsk)[0]]

    assert order == [f"k{i}" for i in range(n)]


def test_unpicklable_graph_node_raises_submit_error_naming_the_key():
    with pytest.raises(SubmitError, match="'bad'"):
        graph.graph_tasks({"bad": (id, threading.Lock())})


# -- task keys ---------------------------------------------------------------------------


def test_pure_task_key_is_deterministic():
    first = graph.task_key("inc", b"func", b"args", pure=True)

    assert first == graph.task_key("inc", b"func", b"args", pure=True)
    assert first.startswith("inc-")


def test_pure_task_key_depends_on_function_and_arguments():
    base = graph.task_key("inc", b"func", b"args", pure=True)

    assert graph.task_key("inc", b"other", b"args", pure=True) != base
    assert graph.task_key("inc", b"func", b"other", pure=True) != base


def test_impure_task_key_is_fresh_every_call():
    keys = {graph.task_key("inc", b"func", b"args", pure=False) for _ in range(100)}

    assert len(keys) == 100
    assert all(k.startswith("inc-") for k in keys)


def test_funcname_names_lambdas_and_callables():
    assert graph.funcname(inc) == "inc"
    assert graph.funcname(lambda: 1) == "lambda"
    assert graph.funcname(operator.methodcaller("x")) == "methodcaller"


def test_function_bytes_pickles_importable_functions_by_reference():
    assert graph.function_bytes(operator.add) == pickle.dumps(operator.add, protocol=5)
    assert serialize.loads([graph.function_bytes(lambda x: 2 * x)])(4) == 8


# -- arguments ---------------------------------------------------------------------------


class FakeFuture:
    """Stands in for ``rdist.Future``: all pack_arguments needs is its wire name."""

    def __init__(self, key: str) -> None:
        self.key = self._name = key


def fake_futures_of(obj: Any) -> list[FakeFuture]:
    if isinstance(obj, FakeFuture):
        return [obj]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [f for x in obj for f in fake_futures_of(x)]
    if isinstance(obj, dict):
        return [f for x in obj.values() for f in fake_futures_of(x)]
    return []


def pack(*args: Any, **kwargs: Any) -> tuple[bytes, list[str], int]:
    blob, deps, mode, scattered = graph.pack_arguments(args, kwargs, fake_futures_of, FakeFuture)
    assert scattered == []  # small arguments travel inline
    return blob, deps, mode


def test_arguments_without_futures_are_packed_for_a_plain_call():
    blob, deps, mode = pack(1, [2, 3], z={"k": "v"})

    assert (deps, mode) == ([], spec.CALL)
    assert serialize.from_blob(blob) == ((1, [2, 3]), {"z": {"k": "v"}})


def test_futures_nested_in_lists_tuples_and_dicts_become_dependencies():
    a, b, c = FakeFuture("a"), FakeFuture("b"), FakeFuture("c")

    blob, deps, mode = pack(a, [b, (c,)], {"k": a}, kw={"deep": [b]})

    assert deps == ["a", "b", "c"]
    assert mode == spec.CALL_WITH_DEPS
    args, kwargs = serialize.from_blob(blob)
    assert [type(args[0]), args[0].key] == [DepRef, "a"]
    assert args[1][1][0].key == "c" and type(args[1][1]) is tuple
    assert kwargs["kw"]["deep"][0].key == "b"


def test_packed_futures_are_replaced_by_their_values_when_run():
    a, b = FakeFuture("a"), FakeFuture("b")
    blob, _, mode = pack([a, (b, 1)], n={"x": a})

    result = spec.run_spec(lambda *args, **kwargs: (args, kwargs), blob, mode, {"a": "A", "b": "B"})

    assert result == ((["A", ("B", 1)],), {"n": {"x": "A"}})


def test_unpicklable_positional_argument_raises_submit_error_naming_its_index():
    with pytest.raises(SubmitError, match=r"argument 1 \(lock\)"):
        pack("fine", threading.Lock())


def test_unpicklable_keyword_argument_raises_submit_error_naming_it():
    with pytest.raises(SubmitError, match="keyword argument 'guard'"):
        pack(1, guard=threading.Lock())


def test_submit_error_is_a_type_error():
    assert issubclass(SubmitError, TypeError)


# -- impure keys ------------------------------------------------------------------------------


def test_impure_keys_are_unique_32_hex_digits_also_across_threads():
    keys: list[str] = []

    def make() -> None:
        keys.extend(graph.task_key("inc", b"", b"", pure=False) for _ in range(2000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 8000
    for key in keys[:10]:
        prefix, digits = key.split("-")
        assert prefix == "inc" and len(digits) == 32 and int(digits, 16) >= 0


def test_a_forked_child_draws_impure_keys_of_its_own():
    import os

    parent = graph.unique_hex()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next key, to the parent
        os.write(write, graph.unique_hex().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert len(child) == 32 and child[:16] != parent[:16]
    assert graph.unique_hex() not in (parent, child)
