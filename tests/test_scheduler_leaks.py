"""Nothing outlives its tasks: a ``funcs`` entry goes with the last task naming it (and is
counted again after a scheduler restart), a result stored after its task was released
mid-run is dropped, and what a departed client sends creates nothing.
"""

from __future__ import annotations

import gc
import uuid
from typing import Any

from rdist.protocol import spec as spec_module
from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler.events import (
    GraphSubmitted,
    KeysReleased,
    TaskErred,
    TasksFinished,
    WorkerJoined,
)
from rdist.scheduler.server import SchedulerServer
from rdist.scheduler.state import SchedulerState
from rdist.store import connect
from rdist.store.connection import drop_fake_server
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster


def make_adder(n: int) -> Any:
    def add(x: int) -> int:
        return x + n

    return add


def funcs_stored(c: Any) -> set[bytes]:
    return {bytes(h) for h in c.store.redis.hkeys(c.store.keys.funcs)}


def test_a_functions_entry_survives_while_a_task_names_it_and_goes_with_the_last() -> None:
    with fake_cluster(n_workers=1) as (c, cluster):
        add = make_adder(1)
        first, second = c.submit(add, 1, pure=False), c.submit(add, 2, pure=False)
        assert (first.result(timeout=10), second.result(timeout=10)) == (2, 3)
        assert len(funcs_stored(c)) == 1
        func = next(iter(funcs_stored(c)))

        del first
        gc.collect()
        wait_until(lambda: len(cluster.scheduler.state.tasks) == 1, what="first forgotten")
        assert funcs_stored(c) == {func}  # the second task still names it
        assert cluster.scheduler.state.func_refs == {func: 1}

        del second
        gc.collect()
        wait_until(lambda: not funcs_stored(c), what="the function dropped with its last task")
        assert cluster.scheduler.state.func_refs == {}

        # the same function again: the client sends it with every graph, so it comes back
        assert c.submit(add, 5, pure=False).result(timeout=10) == 6
        assert funcs_stored(c) == {func}


def test_many_distinct_closures_leave_no_function_behind() -> None:
    with fake_cluster(n_workers=2) as (c, _):
        futures = [c.submit(make_adder(i), 1, pure=False) for i in range(50)]
        assert c.gather(futures) == [1 + i for i in range(50)]
        assert len(funcs_stored(c)) == 50
        del futures
        gc.collect()
        wait_until(lambda: not funcs_stored(c), what="every function dropped")
        wait_until(lambda: c.store.redis.hlen(c.store.keys.specs) == 0, what="specs dropped")


def test_restart_counts_functions_again_and_drops_what_no_task_names() -> None:
    url = f"fakeredis://{uuid.uuid4().hex}"
    store = connect(url, "restore")
    try:
        named, orphan = b"n" * 16, b"o" * 16
        spec = spec_module.pack_spec(named, b"args", spec_module.CALL)
        records = {
            key: wire.TaskRecord("released", (0, 1, i), who_wants=["c1"]).encode()
            for i, key in enumerate(["a", "b"])
        }
        store.tasks.put_many(records)
        # two tasks name one function; a spec no task owns; a function nobody names
        store.specs.put_many({"a": spec, "b": spec, "stray": spec})
        store.specs.put_functions({named: b"pickled", orphan: b"old"})
        store.clients.beat("c1", wire.ClientRecord("c1", 1.0))
        server = SchedulerServer(connect(url, "restore"))

        server._restore()

        assert server.state.func_refs == {named: 2}
        assert {bytes(h) for h in store.redis.hkeys(store.keys.funcs)} == {named}
        assert store.redis.hget(store.keys.specs, "stray") is None
        assert store.redis.hget(store.keys.specs, "a") == spec
        server.state.validate_state()
    finally:
        store.close()
        drop_fake_server(url[len("fakeredis://") :])


def test_graph_and_scatter_of_a_departed_client_create_nothing() -> None:
    with fake_cluster(n_workers=1) as (c, cluster):
        store, streams = c.store, c.store.streams
        streams.to_scheduler(wire.ClientLeave("gone"))
        streams.to_scheduler(wire.UpdateGraph("gone", tasks=[wire.TaskRow("late", [])]))
        store.results.put_many({"scattered": b"blob"})  # what its scatter stored
        streams.to_scheduler(wire.Scatter("gone", [wire.ScatterItem("scattered", [], 4, True)]))
        assert c.submit(make_adder(1), 1).result(timeout=10) == 2  # (read after those)
        state = cluster.scheduler.state
        assert "late" not in state.tasks and "scattered" not in state.tasks
        assert "gone" in state.departed and "gone" not in state.clients
        wait_until(lambda: store.results.get_many(["scattered"]) == [None], what="dropped")
        assert not store.redis.exists(store.keys.client_stream("gone"))


def test_a_result_or_error_stored_after_its_task_was_released_mid_run_is_dropped() -> None:
    s = SchedulerState(direct_notify=False, coassign=False)
    s.handle(WorkerJoined("j", 0.0, "w", "w", 2))
    s.handle(
        GraphSubmitted("g", 0.0, "c", [wire.TaskRow("a", []), wire.TaskRow("b", [])], ["a", "b"])
    )
    assert s.tasks["a"].state.value == "processing"
    s.handle(KeysReleased("r", 0.0, "c", ["a", "b"]))  # both forgotten while they run
    assert not s.tasks

    done = s.handle(TasksFinished("f", 0.0, "w", [ev.FinishedTask("a", 8, True, None, 0.1)]))
    failed = s.handle(TaskErred("e", 0.0, "w", "b", b"error"))

    assert [i.key for i in done if isinstance(i, ev.DropResult)] == ["a"]
    assert [i.key for i in failed if isinstance(i, ev.DropResult)] == ["b"]
    s.validate_state()


def test_a_functions_count_follows_the_tasks_naming_it_in_the_core() -> None:
    func, pickled = b"f" * 16, b"pickled"
    spec = spec_module.pack_spec(func, b"args", spec_module.CALL)
    s = SchedulerState(direct_notify=False, coassign=False)
    rows = [wire.TaskRow("a", []), wire.TaskRow("b", [])]
    out = s.handle(
        GraphSubmitted("g", 0.0, "c", rows, ["a", "b"], [], {"a": spec, "b": spec}, {func: pickled})
    )
    assert [(i.hash, i.func) for i in out if isinstance(i, ev.StoreFunction)] == [(func, pickled)]
    assert s.func_refs == {func: 2}

    out = s.handle(KeysReleased("r", 0.0, "c", ["a"]))
    assert s.func_refs == {func: 1} and not [i for i in out if isinstance(i, ev.DropFunction)]
    out = s.handle(KeysReleased("r", 0.0, "c", ["b"]))
    assert s.func_refs == {} and [i.hash for i in out if isinstance(i, ev.DropFunction)] == [func]
    s.validate_state()


def test_a_cycle_from_an_old_client_errs_where_it_closes_and_is_forgotten() -> None:
    s = SchedulerState(direct_notify=False, coassign=False)
    s.handle(WorkerJoined("j", 0.0, "w", "w", 1))
    rows = [wire.TaskRow("a", ["b"]), wire.TaskRow("b", ["a"]), wire.TaskRow("ok", [])]
    out = s.handle(GraphSubmitted("g", 0.0, "c", rows, ["a", "b", "ok"]))
    erred = {i.key for i in out if isinstance(i, ev.Notify) and i.status == "erred"}
    assert erred == {"a", "b"}  # the task closing the cycle and its dependent
    assert "dependency cycle" in (s.tasks["b"].error_text or s.tasks["a"].error_text or "")
    assert s.tasks["ok"].state.value == "processing"  # the good task is untouched
    s.handle(KeysReleased("r", 0.0, "c", ["a", "b"]))
    assert set(s.tasks) == {"ok"}  # nothing of the cycle stays
    s.validate_state()


def test_nothing_but_the_client_itself_creates_its_stream() -> None:
    with fake_cluster(n_workers=1) as (c, _):
        store = c.store
        store.streams.to_client("never-joined", wire.Notify([]))  # a late direct report
        assert not store.redis.exists(store.keys.client_stream("never-joined"))
        assert store.redis.exists(store.keys.client_stream(c.id))  # made as it joined
        client_id = c.id
        c.close()
        wait_until(
            lambda: not store.redis.exists(store.keys.client_stream(client_id)),
            what="the stream of a closed client gone",
        )
