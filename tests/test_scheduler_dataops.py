"""Worker status and data placement in the scheduler's pure state machine (no Redis)."""

from __future__ import annotations

from rdist.scheduler.events import (
    Barrier,
    DataReplicated,
    DropReplicas,
    Notify,
    PersistTasks,
    WorkerStatusChanged,
)
from rdist.scheduler.state import SchedulerState
from tests.test_scheduler_state import (
    W1,
    W2,
    A,
    _sid,
    computes,
    finished,
    freed,
    joined,
    left,
    of_type,
    st,
    state,
    submit,
    task,
)

__all__ = ["state"]  # the fixture, imported for pytest


def paused(address: str) -> WorkerStatusChanged:
    return WorkerStatusChanged(_sid(), 0.0, address, "paused")


def running(address: str) -> WorkerStatusChanged:
    return WorkerStatusChanged(_sid(), 0.0, address, "running")


def test_a_paused_worker_gets_no_new_tasks_until_it_runs_again(state: SchedulerState) -> None:
    state.handle(joined(W1), joined(W2))
    state.handle(paused(W1))

    out = state.handle(submit(A, *(task(f"t{i}") for i in range(4))))

    assert {w for w, _ in computes(out)} == {W2}
    assert state.workers[W1].status == "paused"
    queued = [k for k in (f"t{i}" for i in range(4)) if st(state, k) == "queued"]
    assert queued  # the rest waits at the scheduler, not on the paused worker

    out = state.handle(running(W1))

    assert (W1, queued[0]) in computes(out)


def test_data_on_a_paused_worker_does_not_pull_its_dependents_there(state: SchedulerState) -> None:
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("big")))
    holder = state.tasks["big"].processing_on
    other = W2 if holder == W1 else W1
    state.handle(finished(holder, "big", nbytes=50_000_000))
    state.handle(paused(holder))

    out = state.handle(submit(A, task("use", "big")))

    assert computes(out) == [(other, "use")]


def test_worker_status_changes_are_logged_and_unknown_statuses_ignored(
    state: SchedulerState,
) -> None:
    state.handle(joined(W1))
    out = state.handle(paused(W1))
    assert [e.kind for e in of_type(out, type(out[0]))] == ["worker-paused"]
    state.handle(WorkerStatusChanged(_sid(), 0.0, W1, "on-fire"))
    state.handle(WorkerStatusChanged(_sid(), 0.0, "tcp://nobody:1", "paused"))
    assert state.workers[W1].status == "paused"


def _held_on_both(state: SchedulerState) -> None:
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x")))
    holder = state.tasks["x"].processing_on
    state.handle(finished(holder, "x", nbytes=1_000_000))
    state.handle(DataReplicated(_sid(), 0.0, W2 if holder == W1 else W1, ["x"]))
    assert state.tasks["x"].who_has == {W1, W2}


def test_dropping_a_replica_frees_it_and_updates_the_record(state: SchedulerState) -> None:
    _held_on_both(state)

    out = state.handle(DropReplicas(_sid(), 0.0, A, {"x": [W1]}))

    assert freed(out) == [(W1, "x")]
    assert state.tasks["x"].who_has == {W2} and "x" not in state.workers[W1].has_what
    records = [i.records["x"] for i in of_type(out, PersistTasks) if "x" in i.records]
    assert records and records[-1].who_has == [W2]


def test_the_last_copy_is_never_dropped(state: SchedulerState) -> None:
    _held_on_both(state)

    out = state.handle(DropReplicas(_sid(), 0.0, A, {"x": [W1, W2], "unknown": [W1]}))

    assert len(freed(out)) == 1
    assert len(state.tasks["x"].who_has) == 1 and st(state, "x") == "memory"


def test_a_barrier_is_answered_after_what_came_before(state: SchedulerState) -> None:
    state.handle(joined(W1))
    out = state.handle(DataReplicated(_sid(), 0.0, W1, []), Barrier(_sid(), 0.0, A, "req-1"))

    [answer] = of_type(out, Notify)
    assert (answer.client, answer.key, answer.status, answer.info) == (
        A,
        "",
        "barrier",
        {"id": "req-1"},
    )


def test_a_departed_worker_leaves_the_stored_who_has(state: SchedulerState) -> None:
    _held_on_both(state)

    out = state.handle(left(W1))

    records = [i.records["x"] for i in of_type(out, PersistTasks) if "x" in i.records]
    assert records and records[-1].who_has == [W2]
