"""The worker's execution shell (:class:`rdist.worker.execution.Executor`) around a real
state machine, without Redis or executor threads: what runs on the receiving thread, what
is handed to executor threads, what a task sees of itself while it runs."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from rdist import task_context
from rdist.protocol import serialize
from rdist.protocol.spec import CALL_WITH_DEPS, DepRef
from rdist.protocol.wire import DepInfo
from rdist.worker.events import ComputeTask, Event, Execute, ReportError, ReportSuccess, SendReport
from rdist.worker.execution import INLINE_BUDGET, Executor, Outcome, error_blob
from rdist.worker.profiler import Profiler
from rdist.worker.state import WorkerState, WTaskState


class StubWorker:
    """What the executor needs of a worker: a state machine, data, a reporter's queue."""

    def __init__(self, nthreads: int = 1) -> None:
        self.state = WorkerState(nthreads)
        self.data: dict[str, Any] = {}
        self.executed = 0
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []
        self.reported: list[SendReport] = []
        self._ids = itertools.count()
        self.reporter = self
        self.profiler = Profiler("tcp://stub:1", None, self.stop_event, interval=0)  # type: ignore[arg-type]
        self.tracer = None  #: no OpenTelemetry
        self.task_spans: dict[str, list[str]] = {}

    # the worker's side
    def stimulus(self, cause: str) -> str:
        return f"{cause}-{next(self._ids)}"

    def handle(self, *events: Event) -> tuple[list[Execute], list[SendReport]]:
        out = self.state.handle_stimulus(*events)
        self.state.validate_state()
        return [i for i in out if isinstance(i, Execute)], [
            i for i in out if isinstance(i, SendReport)
        ]

    # the reporter's side
    def put(self, items: list[SendReport]) -> None:
        self.reported += items


class Data(dict):
    """``SpillBuffer.set`` as a dict."""

    def set(self, key: str, value: Any, nbytes: int, frames: Any = None) -> None:
        self[key] = value


def spec_of(func: Any, *args: Any) -> tuple[Any, bytes, int]:
    return (func, serialize.to_blob((list(args), {})), CALL_WITH_DEPS, None)  # no span


def make(nthreads: int = 1) -> tuple[StubWorker, Executor, list[Execute]]:
    worker = StubWorker(nthreads)
    worker.data = Data()
    executor = Executor(worker)  # type: ignore[arg-type]
    submitted: list[Execute] = []
    executor.submit = submitted.extend  # type: ignore[method-assign]
    return worker, executor, submitted


def assign(worker: StubWorker, key: str, spec: Any, priority: int = 0) -> list[Execute]:
    event = ComputeTask(worker.stimulus("c"), 0.0, key, (priority,), {}, None, None, spec)
    return worker.handle(event)[0]


def learn_quick(worker: StubWorker, prefix: str) -> None:
    worker.state.durations[prefix] = 0.0001


def test_quick_tasks_run_on_the_receiving_thread_in_one_report():
    worker, executor, submitted = make()
    learn_quick(worker, "inc")
    executes = assign(worker, "inc-1", spec_of(lambda x: x + 1, 1))
    executes += assign(worker, "inc-2", spec_of(lambda x: x + 1, 2), priority=1)

    reports = executor.run_inline(executes)

    assert submitted == []  # no executor thread woken
    assert [(r.key, type(r)) for r in reports] == [
        ("inc-1", ReportSuccess),
        ("inc-2", ReportSuccess),
    ]
    assert worker.data == {"inc-1": 2, "inc-2": 3}


def test_tasks_made_ready_by_an_inline_run_go_to_the_executor_threads():
    worker, executor, submitted = make()
    learn_quick(worker, "inc")
    executes = assign(worker, "inc-1", spec_of(lambda: 1))
    dependent = ComputeTask(
        worker.stimulus("c"),
        0.0,
        "inc-2",
        (1,),
        {"inc-1": DepInfo([], 0, False)},
        None,
        None,
        spec_of(lambda x: x + 1, DepRef("inc-1")),
    )
    executes += worker.handle(dependent)[0]

    reports = executor.run_inline(executes)

    assert [r.key for r in reports] == ["inc-1"]
    assert [e.key for e in submitted] == ["inc-2"]


def test_tasks_not_known_to_be_quick_go_to_the_executor_threads():
    worker, executor, submitted = make()
    executes = assign(worker, "slow-1", spec_of(time.sleep, 0))

    reports = executor.run_inline(executes)

    assert reports == [] and [e.key for e in submitted] == ["slow-1"]
    assert worker.state.tasks["slow-1"].state is WTaskState.EXECUTING  # its slot is counted


def test_quick_tasks_left_when_the_inline_budget_is_spent_go_to_the_executor_threads():
    worker, executor, submitted = make()
    learn_quick(worker, "nap")
    executes = assign(worker, "nap-1", spec_of(time.sleep, INLINE_BUDGET * 2))
    executes += assign(worker, "nap-2", spec_of(time.sleep, 0), priority=1)

    reports = executor.run_inline(executes)

    assert [r.key for r in reports] == ["nap-1"]
    assert [e.key for e in submitted] == ["nap-2"]


def test_a_running_task_is_the_current_running_task_and_only_while_it_runs():
    worker, executor, _ = make()
    seen: list[Any] = []

    def look() -> str:
        context = task_context.current()
        seen.append(context)
        return context.key

    (ex,) = assign(worker, "look-1", spec_of(look))
    executor.run(ex)

    assert worker.data["look-1"] == "look-1"
    assert seen[0].seceded is False and callable(seen[0].secede) and callable(seen[0].rejoin)
    assert task_context.current() is None


def test_a_raising_task_reports_its_error_and_the_stub_worker_carries_on():
    worker, executor, _ = make()

    (ex,) = assign(worker, "bad-1", spec_of(lambda: 1 / 0))
    executes, reports, _ = executor.run(ex)

    (report,) = reports
    assert isinstance(report, ReportError)
    exc, tb, _ = serialize.from_blob(report.error)
    assert isinstance(exc, ZeroDivisionError) and "ZeroDivisionError" in tb
    assert "bad-1" not in worker.data and worker.state.running == 0


def test_a_spec_that_could_not_be_loaded_errs_the_task_with_that_reason():
    worker, executor, _ = make()

    (ex,) = assign(worker, "x", RuntimeError("task 'x' has no spec in Redis"))
    _, (report,), _ = executor.run(ex)

    exc, _, _ = serialize.from_blob(report.error)
    assert isinstance(exc, RuntimeError) and "no spec" in str(exc)


def test_a_spec_redis_lost_sends_the_task_back_to_the_scheduler_not_to_error():
    """After Redis lost its data a worker may get a task before the client re-submitted
    its spec: that is no error of the task (it erred before, and its future raised)."""
    from rdist.exceptions import SpecLost
    from rdist.worker.events import ReportError, ReportRescheduled

    worker, executor, _ = make()

    (ex,) = assign(worker, "x", SpecLost("task 'x' has no spec in Redis"))
    _, reports, _ = executor.run(ex)

    assert [type(r) for r in reports] == [ReportRescheduled]
    assert not [r for r in reports if isinstance(r, ReportError)]


def test_small_results_travel_as_blobs_and_large_ones_stay_here():
    worker, executor, _ = make(nthreads=2)
    small = assign(worker, "small", spec_of(lambda: 7))[0]
    large = assign(worker, "large", spec_of(lambda: b"x" * 200_000))[0]

    (small_report,) = executor.run(small)[1]
    (large_report,) = executor.run(large)[1]

    assert isinstance(small_report.row, Outcome) and small_report.row.blob is not None
    assert serialize.from_blob(small_report.row.blob) == 7
    assert large_report.row.blob is None and large_report.row.nbytes >= 200_000


def test_an_unpicklable_exception_is_sent_as_a_stand_in():
    class Unpicklable(Exception):
        def __reduce__(self) -> Any:
            raise TypeError("no")

    exc, _, _ = serialize.from_blob(error_blob(Unpicklable("boom"), "tb"))

    assert isinstance(exc, RuntimeError) and "Unpicklable: boom" in str(exc)


def test_secede_outside_a_task_says_where_it_works():
    from rdist.worker.execution import secede

    with pytest.raises(ValueError, match="inside a task"):
        secede()


def test_a_batchs_actions_become_one_event_per_run_of_computes_or_frees_in_order():
    from rdist.protocol.wire import Compute, Free, Steal
    from rdist.worker.events import ComputeTasks, FreeKeys, StealRequest
    from rdist.worker.stream import _events_of

    a, b, c = (Compute(k, (0,), {}) for k in "abc")
    actions = [a, b, Free(["x"]), Free(["y", "z"]), Steal("s"), c, Free(["a"])]

    events = _events_of("1-0", 5.0, actions, {"a": "spec-a"})

    assert [type(e) for e in events] == [
        ComputeTasks,
        FreeKeys,
        StealRequest,
        ComputeTasks,
        FreeKeys,
    ]
    first, freed, stolen, last, freed_last = events
    assert isinstance(first, ComputeTasks) and first.actions == [a, b]
    assert first.specs == {"a": "spec-a"}
    assert isinstance(freed, FreeKeys) and freed.keys == ["x", "y", "z"]
    assert isinstance(stolen, StealRequest) and stolen.key == "s"
    assert isinstance(last, ComputeTasks) and last.actions == [c]
    assert isinstance(freed_last, FreeKeys) and freed_last.keys == ["a"]
    assert {(e.stimulus_id, e.time) for e in events} == {("1-0", 5.0)}
