"""The worker's pure bookkeeping: which tasks wait for data, which run, which were freed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rdist.worker.state import Decisions, WorkerState, WTaskState

PEER = "tcp://10.0.0.9:9001"


@pytest.fixture
def ws() -> Iterator[WorkerState]:
    state = WorkerState()
    yield state
    state.validate_state()


def compute(
    ws: WorkerState, key: str, deps: dict[str, list] | None = None, priority: list | None = None
) -> Decisions:
    out = Decisions()
    ws.compute(key, priority or [0, 0, 0], deps or {}, out, task_spec=("func", b"args", 0))
    return out


def held_by_peer(nbytes: int = 100, in_redis: bool = False) -> list:
    return [[PEER], nbytes, in_redis]


def ready_keys(out: Decisions) -> list[str]:
    return [ts.key for ts in out.ready]


def test_task_without_dependencies_is_ready_at_once(ws):
    out = compute(ws, "x", priority=[1, 2, 3])

    assert ready_keys(out) == ["x"] and out.fetch == {}
    ts = ws.tasks["x"]
    assert ts.state is WTaskState.READY
    assert ts.priority == (1, 2, 3) and ts.spec == ("func", b"args", 0)


def test_task_whose_dependencies_are_local_is_ready_without_fetching(ws):
    ws.have.add("a")

    out = compute(ws, "b", {"a": [["tcp://self"], 8, False]})

    assert ready_keys(out) == ["b"]
    assert out.fetch == {}


def test_missing_dependency_is_fetched_and_the_task_waits_for_it(ws):
    out = compute(ws, "b", {"a": held_by_peer(100, True)})

    assert ready_keys(out) == []
    assert out.fetch == {"a": ([PEER], 100, True)}
    assert ws.tasks["b"].state is WTaskState.FETCHING
    assert ws.tasks["b"].missing == {"a"}


def test_dependency_needed_by_two_tasks_is_fetched_once(ws):
    first = compute(ws, "b", {"a": held_by_peer()})
    second = compute(ws, "c", {"a": held_by_peer()})

    assert list(first.fetch) == ["a"]
    assert second.fetch == {}

    out = Decisions()
    ws.fetched(["a"], out)
    assert sorted(ready_keys(out)) == ["b", "c"]
    assert "a" in ws.have and ws.fetching == set()


def test_task_is_ready_only_once_every_missing_dependency_arrived(ws):
    compute(ws, "c", {"a": held_by_peer(), "b": held_by_peer()})

    out = Decisions()
    ws.fetched(["a"], out)
    assert ready_keys(out) == []
    assert ws.tasks["c"].state is WTaskState.FETCHING

    ws.fetched(["b"], out)
    assert ready_keys(out) == ["c"]
    assert ws.tasks["c"].state is WTaskState.READY


def test_compute_for_a_key_already_held_reports_it_done(ws):
    ws.have.add("x")

    out = compute(ws, "x")

    assert out.already_done == ["x"] and out.ready == []
    assert "x" not in ws.tasks


def test_duplicate_compute_is_ignored(ws):
    compute(ws, "b", {"a": held_by_peer()})

    out = compute(ws, "b", {"a": held_by_peer()})

    assert out.ready == [] and out.fetch == {}


def test_task_freed_while_executing_is_cancelled_and_its_result_not_reported(ws):
    (ts,) = compute(ws, "x").ready
    assert ws.start(ts)

    out = Decisions()
    ws.free("x", out)

    assert ts.state is WTaskState.CANCELLED
    assert ws.finished("x", stored=True) is False
    assert "x" not in ws.have and "x" not in ws.tasks


def test_cancelled_task_computed_again_counts_its_running_execution(ws):
    (ts,) = compute(ws, "x").ready
    ws.start(ts)
    ws.free("x", Decisions())

    out = compute(ws, "x")

    assert out.ready == []  # not run twice
    assert ts.state is WTaskState.EXECUTING
    assert ws.finished("x", stored=True) is True
    assert "x" in ws.have


def test_task_freed_before_a_thread_picks_it_up_does_not_start(ws):
    (ts,) = compute(ws, "x").ready

    ws.free("x", Decisions())

    assert ws.start(ts) is False
    assert "x" not in ws.tasks


def test_task_freed_while_fetching_is_not_made_ready_when_data_arrives(ws):
    compute(ws, "b", {"a": held_by_peer()})
    ws.free("b", Decisions())

    out = Decisions()
    ws.fetched(["a"], out)

    assert out.ready == []
    assert "b" not in ws.tasks
    assert "a" in ws.have


def test_freeing_held_data_drops_it(ws):
    (ts,) = compute(ws, "x").ready
    ws.start(ts)
    assert ws.finished("x", stored=True)

    out = Decisions()
    ws.free("x", out)

    assert out.drop_data == ["x"]
    assert "x" not in ws.have


def test_finished_task_that_stored_nothing_is_reported_but_not_held(ws):
    (ts,) = compute(ws, "x").ready
    ws.start(ts)

    assert ws.finished("x", stored=False) is True
    assert "x" not in ws.have


def test_failed_fetch_fails_the_tasks_that_needed_it(ws):
    compute(ws, "b", {"a": held_by_peer()})
    compute(ws, "c", {"a": held_by_peer()})
    compute(ws, "d", {"other": held_by_peer()})

    failed = ws.fetch_failed(["a"])

    assert sorted(failed) == ["b", "c"]
    assert set(ws.tasks) == {"d"}
    assert "a" not in ws.fetching


def test_dependency_is_fetched_again_after_a_failed_fetch(ws):
    compute(ws, "b", {"a": held_by_peer()})
    ws.fetch_failed(["a"])

    out = compute(ws, "c", {"a": held_by_peer()})

    assert list(out.fetch) == ["a"]


def test_validate_state_catches_a_ready_task_with_missing_inputs(ws):
    compute(ws, "b", {"a": held_by_peer()})
    ws.tasks["b"].state = WTaskState.READY

    with pytest.raises(AssertionError):
        ws.validate_state()

    ws.tasks["b"].state = WTaskState.FETCHING  # restore for the fixture's final check
