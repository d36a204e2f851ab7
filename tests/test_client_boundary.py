"""The client refuses what it cannot do, at the call (issue 11, items 2 and 3).

Each test pins one finding: a call that used to be accepted and then lost (or hung), a
tuple key that must work end to end, a large argument that must not travel in a stream.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from rdist import Client, Future
from rdist.client import keynames, large, submit
from rdist.client import sender as sender_module
from rdist.exceptions import ClosedClientError
from rdist.protocol import wire
from rdist.store.streams import Streams
from tests.client_helpers import wait_gate


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def total(x: Any) -> float:
    return float(np.sum(x))


def gated(gate: str) -> int:
    wait_gate(gate)
    return 1


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """``(op, bytes)`` of every entry put on the scheduler's stream (bundles opened)."""
    seen: list[tuple[str, int]] = []
    original = Streams.to_scheduler

    def spy(self: Streams, msg: Any, pipe: Any = None) -> None:
        payload = msg if isinstance(msg, bytes) else msg.encode()
        body = wire.unpack(payload, "sched")
        if body.get("op") == wire.BUNDLE_OP:
            seen.extend((str(wire.unpack(p, "sched").get("op")), len(p)) for p in body["msgs"])
        else:
            seen.append((str(body.get("op")), len(payload)))
        original(self, msg, pipe)

    monkeypatch.setattr(Streams, "to_scheduler", spy)
    return seen


# -- keywords checked at the call ---------------------------------------------------------


@pytest.mark.parametrize(
    ("keywords", "error", "names"),
    [
        ({"priority": "high"}, TypeError, "priority"),
        ({"priority": 1.5}, TypeError, "priority"),
        ({"priority": 2**70}, ValueError, "priority"),
        ({"retries": -1}, ValueError, "retries"),
        ({"retries": "2"}, TypeError, "retries"),
        ({"resources": {"GPU": "one"}}, TypeError, "resources"),
        ({"resources": {"GPU": -1}}, ValueError, "resources"),
        ({"resources": {"GPU": float("nan")}}, ValueError, "resources"),
        ({"resources": ["GPU"]}, TypeError, "resources"),
        ({"workers": 1}, TypeError, "workers"),
        ({"workers": [1]}, TypeError, "workers"),
        ({"allow_other_workers": "yes", "workers": ["w"]}, TypeError, "allow_other_workers"),
        ({"allow_other_workers": True}, ValueError, "allow_other_workers"),
        ({"pure": "no"}, TypeError, "pure"),
        ({"key": b"x"}, TypeError, "key"),
        ({"key": None, "priority": None, "retries": None}, None, ""),
        ({"key": ["x"]}, TypeError, "key"),
        ({"key": ("x", None)}, TypeError, "key"),
        ({"key": float("inf")}, ValueError, "key"),
        ({"key": ""}, ValueError, "key"),
    ],
)
def test_submit_refuses_bad_keywords_naming_them(
    c: Client, keywords: dict[str, Any], error: type[Exception] | None, names: str
) -> None:
    if error is None:
        assert c.submit(inc, 1, **keywords).result(timeout=10) == 2
        return
    with pytest.raises(error, match=names):
        c.submit(inc, 1, **keywords)
    if "key" not in keywords:  # map's key is a prefix or a list: its own test below
        with pytest.raises(error, match=names):
            c.map(inc, [1, 2], **keywords)


def test_a_refused_call_sends_nothing_and_the_next_good_one_runs(
    c: Client, sent: list[tuple[str, int]]
) -> None:
    c._sender.flush()
    before = len(sent)
    with pytest.raises(TypeError):
        c.submit(inc, 1, resources={"GPU": "one"})
    with pytest.raises(ValueError):
        c.get({"a": (inc, "b"), "b": (inc, "a")}, "a")
    c._sender.flush()
    assert sent[before:] == []
    assert c.submit(inc, 41).result(timeout=10) == 42


def test_get_and_compute_check_their_keywords_and_annotations(c: Client) -> None:
    dsk = {"a": 1, "b": (inc, "a")}
    with pytest.raises(TypeError, match="priority"):
        c.get(dsk, "b", priority="high")
    with pytest.raises(ValueError, match="resources"):
        c.get(dsk, "b", resources={"GPU": -1})
    dask = pytest.importorskip("dask")
    import dask.array as da

    with dask.annotate(resources={"GPU": "one"}):
        x = da.ones(10, chunks=5) + 1
    with pytest.raises(TypeError, match="annotation 'resources'"):
        c.compute(x.sum(), optimize_graph=False)  # dask's fusion drops layer annotations
    with pytest.raises(TypeError, match="retries"):
        c.compute(da.ones(4, chunks=2).sum(), retries=1.5)
    assert c.get(dsk, "b") == 2


def test_negative_resources_no_longer_let_two_gpu_tasks_overlap(c: Client) -> None:
    # resources={"GPU": -1} used to be accepted: the worker's count went up, not down
    with pytest.raises(ValueError, match=r"resources\['GPU'\]"):
        c.submit(inc, 1, resources={"GPU": -1})


# -- keys as dask has them ------------------------------------------------------------------


def test_tuple_and_number_keys_work_end_to_end(c: Client) -> None:
    x = c.submit(inc, 1, key=("x", 1))
    y = c.submit(add, x, 10, key=123)
    z = c.submit(inc, y, key=("z", ("nested", 2), 0.5))

    assert (x.key, y.key, z.key) == (("x", 1), 123, ("z", ("nested", 2), 0.5))
    assert z.result(timeout=10) == 13 and x.result() == 2
    assert set(c.who_has([x, y])) == {("x", 1), 123}
    assert ("x", 1) in c.get_futures() and c.get_futures()[123].result() == 12


def test_a_string_key_that_looks_like_a_tuple_is_another_task(c: Client) -> None:
    as_tuple = c.submit(inc, 1, key=("x", 1))
    as_text = c.submit(inc, 100, key="('x', 1)")

    assert (as_tuple.result(timeout=10), as_text.result(timeout=10)) == (2, 101)
    assert as_text.key == "('x', 1)" and as_tuple.key == ("x", 1)
    assert keynames.user_key(as_text._name) == "('x', 1)"


def test_map_takes_a_list_of_dask_keys(c: Client) -> None:
    futures = c.map(inc, [1, 2], key=[("m", 0), ("m", 1)])

    assert [f.key for f in futures] == [("m", 0), ("m", 1)]
    assert c.gather(futures) == [2, 3]
    with pytest.raises(ValueError, match="distinct"):
        c.map(inc, [1, 2], key=["same", "same"])


def test_get_with_tuple_keys_returns_values_in_the_shape_of_keys(c: Client) -> None:
    dsk = {("x", 0): 1, ("x", 1): (inc, ("x", 0)), "y": (add, ("x", 0), ("x", 1))}

    assert c.get(dsk, [("x", 0), [("x", 1), "y"]]) == [1, [2, 3]]
    assert c.get(dsk, ("x", 1)) == 2


def test_dask_array_chunks_with_tuple_keys_persist_and_compute(c: Client) -> None:
    da = pytest.importorskip("dask.array")
    x = da.arange(12, chunks=4) * 2

    persisted = c.persist(x)
    [chunk_key, *_] = [k for k in persisted.__dask_keys__()]
    held = c.get_futures()

    assert isinstance(chunk_key, tuple) and chunk_key in held
    assert held[chunk_key].key == chunk_key
    assert persisted.sum().compute(scheduler=c.get) == 2 * sum(range(12))
    assert c.compute(x.sum()).result(timeout=10) == 2 * sum(range(12))


def test_scatter_keeps_the_dask_keys_it_was_given(c: Client) -> None:
    futures = c.scatter({("d", 0): 5, "e": 6})

    assert futures[("d", 0)].key == ("d", 0)
    assert c.submit(add, futures[("d", 0)], futures["e"]).result(timeout=10) == 11
    with pytest.raises(TypeError, match="scatter"):
        c.scatter({b"raw": 1})


# -- cycles ---------------------------------------------------------------------------------


def test_a_cycle_in_a_graph_is_refused_naming_its_keys(c: Client) -> None:
    with pytest.raises(ValueError, match=r"cycle.*'a' -> 'b' -> 'c' -> 'a'"):
        c.get({"a": (inc, "b"), "b": (inc, "c"), "c": (inc, "a"), "d": 1}, "d")
    with pytest.raises(ValueError, match="cycle"):
        c.get({("s", 0): (inc, ("s", 0))}, ("s", 0))
    assert c.get({"a": 1, "b": (inc, "a")}, "b") == 2


def test_a_task_cannot_be_its_own_argument(c: Client) -> None:
    first = c.submit(inc, 1, key="self")
    with pytest.raises(ValueError, match="depend on itself"):
        c.submit(inc, first, key="self")
    with pytest.raises(ValueError, match="depend on itself"):
        c.map(add, [first], [1], key=["self"])
    assert first.result(timeout=10) == 2


# -- unknown keys ---------------------------------------------------------------------------


def test_gather_of_a_key_never_submitted_raises_at_once(c: Client) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match="'never'.*never submitted"):
        c.gather([Future("never", c)])
    with pytest.raises(ValueError, match=r"\('never', 2\).*never submitted"):
        Future(("never", 2), c).result(timeout=30)
    assert time.monotonic() - started < 10  # not the result's timeout: it knows


def test_a_future_made_by_hand_follows_a_key_another_client_submitted(
    cluster_and_client: Any,
) -> None:
    c, cluster = cluster_and_client
    with Client(cluster, set_as_default=False) as other:
        theirs = other.submit(inc, 9, key="shared")
        assert theirs.result(timeout=10) == 10

        mine = Future("shared", c)

        assert mine.result(timeout=10) == 10


# -- closed clients -------------------------------------------------------------------------


def test_every_call_on_a_closed_client_raises(cluster_and_client: Any) -> None:
    _, cluster = cluster_and_client
    client = Client(cluster, set_as_default=False)
    client.close()
    calls = {
        "submit": lambda: client.submit(inc, 1),
        "map": lambda: client.map(inc, [1]),
        "get": lambda: client.get({"a": 1}, "a"),
        "gather": lambda: client.gather([]),
        "scatter": lambda: client.scatter(1),
        "run": lambda: client.run(inc, 1),
    }
    for name, call in calls.items():
        with pytest.raises(ClosedClientError, match=f"closed: cannot {name}"):
            call()


def test_submit_after_close_sends_nothing(
    cluster_and_client: Any, sent: list[tuple[str, int]]
) -> None:
    _, cluster = cluster_and_client
    client = Client(cluster, set_as_default=False)
    client.close()
    before = len(sent)
    with pytest.raises(ClosedClientError):
        client.submit(inc, 1, key="after-close")
    assert sent[before:] == []  # the task used to run, its result left in Redis for ever


def test_futures_of_a_closed_client_raise_instead_of_hanging(
    cluster_and_client: Any, gates: Any
) -> None:
    c, cluster = cluster_and_client
    client = Client(cluster, set_as_default=False)
    done = client.submit(inc, 1)
    assert done.result(timeout=10) == 2
    gate = gates.new()
    pending = client.submit(gated, gate, pure=False)
    raised: list[BaseException] = []
    waiter = threading.Thread(target=lambda: _catch(pending.result, raised), daemon=True)
    waiter.start()
    time.sleep(0.2)

    client.close()
    waiter.join(5)

    assert not waiter.is_alive() and isinstance(raised[0], ClosedClientError)
    assert pending.cancelled()
    for call in (done.result, pending.result, lambda: c.gather([done])):
        with pytest.raises(ClosedClientError):
            call()
    with pytest.raises(ClosedClientError, match="argument holds future"):
        c.submit(inc, done)
    assert c.submit(inc, 2).result(timeout=10) == 3  # the other client is unaffected


def _catch(call: Any, into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        into.append(exc)


# -- large arguments ------------------------------------------------------------------------


def test_a_large_argument_is_scattered_not_sent_through_the_stream(
    c: Client, sent: list[tuple[str, int]]
) -> None:
    big = np.random.random(1_000_000)  # 8 MB

    future = c.submit(total, big)

    assert future.result(timeout=30) == pytest.approx(big.sum())
    assert max(size for _, size in sent) < large.INLINE_BYTES
    [held] = c.ledger._pins[future._name]
    assert held.key.startswith("ndarray-") and held.key in c.who_has()
    assert c.submit(total, big).key == future.key  # pure: the same data, the same key


def test_scattered_arguments_go_when_their_task_is_released(c: Client) -> None:
    future = c.submit(total, np.ones(500_000))
    assert future.result(timeout=30) == 500_000
    [held] = c.ledger._pins[future._name]
    name = held._name
    del held
    future.release()
    del future
    deadline = time.monotonic() + 10
    while c.store.tasks.get(name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.store.tasks.get(name) is None


def test_large_arguments_of_map_keyword_and_nested_ones_are_scattered_too(
    c: Client, sent: list[tuple[str, int]]
) -> None:
    arrays = [np.full(200_000, float(i)) for i in range(3)]
    small = c.submit(inc, 0)

    futures = c.map(
        lambda a, s, extra: total(a) + s + len(extra), arrays, [small] * 3, extra=b"x" * 2_000_000
    )
    nested = c.submit(lambda d: total(d["a"]) + d["n"], {"a": arrays[2], "n": small})

    assert c.gather(futures) == [1 + 2_000_000 + 200_000 * i for i in range(3)]
    assert nested.result(timeout=30) == 400_001
    assert max(size for _, size in sent) < large.INLINE_BYTES


def test_large_graph_literals_and_dask_data_are_scattered(
    c: Client, sent: list[tuple[str, int]]
) -> None:
    big = np.random.random(400_000)  # 3.2 MB
    assert c.get({"x": (total, big), "y": (inc, "x")}, "y") == pytest.approx(big.sum() + 1)
    da = pytest.importorskip("dask.array")
    array = da.from_array(np.random.random((800, 800)), chunks=(400, 400))  # 5 MB

    assert c.compute(array.sum()).result(timeout=30) == pytest.approx(float(array.sum()))
    assert max(size for _, size in sent) < large.INLINE_BYTES


def test_a_function_capturing_large_data_is_refused_naming_it(c: Client) -> None:
    captured = b"x" * (large.MAX_FUNCTION_BYTES + 1)

    def closure(x: int) -> int:
        return x + len(captured)

    with pytest.raises(ValueError, match="function 'closure'.*pass that data as an argument"):
        c.submit(closure, 1)


def test_a_big_map_goes_in_messages_under_the_budget(
    c: Client, sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit, "MESSAGE_BYTES", 200_000)
    monkeypatch.setattr(sender_module, "MERGE_BYTES", 200_000)
    payloads = [b"p" * 50_000 for _ in range(40)]  # 2 MB in all, each inline

    futures = c.map(len, payloads, pure=False)

    assert c.gather(futures) == [50_000] * 40
    graph_sizes = [size for op, size in sent if op == "update-graph"]
    assert len(graph_sizes) >= 8 and max(graph_sizes) < 2 * 200_000


def test_a_big_graph_is_sent_in_ordered_slices_that_still_compute(
    c: Client, sent: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submit, "MESSAGE_BYTES", 2_000)
    monkeypatch.setattr(sender_module, "MERGE_BYTES", 2_000)
    dsk: dict[Any, Any] = {("c", 0): 0}
    for i in range(1, 200):
        dsk[("c", i)] = (inc, ("c", i - 1))
    dsk["out"] = (add, ("c", 199), ("c", 50))

    assert c.get(dsk, ["out", ("c", 10)]) == [249, 10]
    assert sum(op == "update-graph" for op, _ in sent) > 5


def test_an_entry_past_the_bound_is_never_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sender_module, "MAX_ENTRY_BYTES", 100)

    kept = sender_module.within_bound([b"s" * 100, b"l" * 101], "c1")

    assert kept == [b"s" * 100]


def test_graph_updates_are_merged_only_up_to_the_merge_size() -> None:
    def update(key: str, nbytes: int) -> sender_module.Outgoing:
        row = wire.TaskRow(key, [])
        return wire.UpdateGraph("c1", tasks=[row], wanted=[key], specs={key: b"s" * nbytes}), None

    items = [update(f"k{i}", sender_module.MERGE_BYTES // 3) for i in range(7)]

    _, entries = sender_module.encode_outbox(items)

    assert len(entries) == 4  # 2 + 2 + 2 + 1 per message
    assert all(len(e) <= sender_module.MERGE_BYTES for e in entries)
