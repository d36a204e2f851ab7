"""``Reschedule`` raised in a task, in the worker's pure state machine: reported as
rescheduled (not as an error), the thread freed, the task runnable here again."""

from __future__ import annotations

from rdist.worker.events import ExecuteFailure, ReportError, ReportRescheduled
from tests.test_worker_state import _sid, compute, executed, reported, run, success, ws

__all__ = ["ws"]  # the fixture, imported for pytest


def rescheduled(key: str) -> ExecuteFailure:
    return ExecuteFailure(_sid(), 1.0, key, 0.1, reschedule=True)


def test_a_rescheduled_task_is_reported_as_such_and_frees_its_thread(ws):
    run(ws, compute("x"), compute("y"))

    out = run(ws, rescheduled("x"))

    assert [r.key for r in reported(out, ReportRescheduled)] == ["x"]
    assert reported(out, ReportError) == []
    assert executed(out) == ["y"]  # the thread went to the next task
    assert "x" not in ws.tasks


def test_a_rescheduled_task_assigned_here_again_runs_again(ws):
    run(ws, compute("x"))
    run(ws, rescheduled("x"))

    out = run(ws, compute("x"))

    assert executed(out) == ["x"]
    run(ws, success("x"))
    assert ws.tasks["x"].state.value == "memory"
