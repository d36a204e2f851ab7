"""Retiring workers, shutting down and ``Reschedule`` in the scheduler's pure state
machine (no Redis)."""

from __future__ import annotations

from rdist.scheduler.events import (
    LogEvent,
    ShutdownRequested,
    StopServing,
    TaskRescheduled,
    WorkersRetiring,
)
from rdist.scheduler.state import SchedulerState
from tests.test_scheduler_state import (
    W1,
    W2,
    A,
    _sid,
    computes,
    finished,
    joined,
    left,
    of_type,
    st,
    state,
    submit,
    task,
)

__all__ = ["state"]  # the fixture, imported for pytest


def retiring(*workers: str) -> WorkersRetiring:
    return WorkersRetiring(_sid(), 0.0, A, list(workers))


def rescheduled(worker: str, key: str) -> TaskRescheduled:
    return TaskRescheduled(_sid(), 0.0, worker, key)


def test_a_retiring_worker_gets_no_new_task(state: SchedulerState) -> None:
    state.handle(joined(W1), joined(W2))
    out = state.handle(retiring(W1))
    assert [e.kind for e in of_type(out, LogEvent)] == ["worker-retiring"]

    out = state.handle(submit(A, *(task(f"t{i}") for i in range(4))))

    assert {w for w, _ in computes(out)} == {W2}
    assert state.workers[W1].status == "closing"


def test_a_retiring_worker_never_runs_again_on_a_status_report(state: SchedulerState) -> None:
    from rdist.scheduler.events import WorkerStatusChanged

    state.handle(joined(W1), joined(W2))
    state.handle(retiring(W1))

    state.handle(WorkerStatusChanged(_sid(), 0.0, W1, "running"))

    assert state.workers[W1].status == "closing"


def test_work_queued_on_a_retired_worker_runs_elsewhere_once_it_left(
    state: SchedulerState,
) -> None:
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    assert state.tasks["x"].processing_on == W1
    state.handle(joined(W2), retiring(W1))

    out = state.handle(left(W1))

    assert computes(out) == [(W2, "x")]


def test_a_rescheduled_task_is_placed_again_and_is_no_error(state: SchedulerState) -> None:
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))

    out = state.handle(rescheduled(W1, "x"))

    assert computes(out) == [(W1, "x")]
    assert st(state, "x") == "processing"
    assert state.tasks["x"].suspicious == 0
    state.handle(finished(W1, "x"))
    assert st(state, "x") == "memory"


def test_a_rescheduled_task_may_go_to_another_worker(state: SchedulerState) -> None:
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(joined(W2), retiring(W1))

    out = state.handle(rescheduled(W1, "x"))

    assert computes(out) == [(W2, "x")]


def test_a_stale_reschedule_report_changes_nothing(state: SchedulerState) -> None:
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x")))
    holder = state.tasks["x"].processing_on
    other = W2 if holder == W1 else W1
    state.handle(finished(holder, "x"))

    out = state.handle(rescheduled(other, "x"), rescheduled(holder, "x"))

    assert computes(out) == []
    assert st(state, "x") == "memory"


def test_shutdown_asks_the_shell_to_stop(state: SchedulerState) -> None:
    out = state.handle(ShutdownRequested(_sid(), 0.0, A))

    assert of_type(out, StopServing) == [StopServing(A)]
    assert [e.kind for e in of_type(out, LogEvent)] == ["shutdown"]


def test_no_dependent_is_co_assigned_to_a_retiring_worker() -> None:
    s = SchedulerState(direct_notify=False, coassign=True)
    s.handle(joined(W1), joined(W2))
    s.handle(submit(A, task("x")))
    holder = s.tasks["x"].processing_on
    s.handle(retiring(holder))

    out = s.handle(submit(A, task("y", "x")))

    assert computes(out) == []
    assert st(s, "y") == "waiting"
    s.validate_state()
