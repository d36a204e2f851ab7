"""The worker's pure state machine: events in, instructions out, no Redis, no threads.

Every test drives :class:`WorkerState` through ``handle_stimulus`` only (except the ones
that call ``_transition`` or corrupt the state on purpose) and ends with
``validate_state()`` through the ``ws`` fixture.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from rdist.protocol.wire import Compute, DepInfo, StoryRow
from rdist.worker.events import (
    ComputeTask,
    ComputeTasks,
    DataArrived,
    Event,
    Execute,
    ExecuteFailure,
    ExecuteSuccess,
    FreeKeys,
    GatherDep,
    GatherDepFailed,
    GatherDepSuccess,
    Instruction,
    Pause,
    RejoinGranted,
    RejoinRequest,
    ReleaseData,
    ReportError,
    ReportInMemory,
    ReportMissing,
    ReportReplicas,
    ReportSeceded,
    ReportStolen,
    ReportSuccess,
    ResetState,
    Secede,
    StealRequest,
    Unpause,
)
from rdist.worker.state import InvalidTransition, WorkerState, WTaskState

PEER, OTHER = "tcp://10.0.0.9:9001", "tcp://10.0.0.8:9001"
SPEC = ("func", b"args", 0)

_stimuli = itertools.count()


def _sid() -> str:
    return f"test-{next(_stimuli)}"


@pytest.fixture
def ws() -> Iterator[WorkerState]:
    state = WorkerState(nthreads=1)
    yield state
    state.validate_state()


def machine(**kwargs: Any) -> WorkerState:
    return WorkerState(**kwargs)


# -- event builders ----------------------------------------------------------------------------


def compute(
    key: str,
    *deps: str,
    priority: int = 0,
    where: dict[str, DepInfo] | None = None,
    resources: dict[str, float] | None = None,
    clients: list[str] | None = None,
) -> ComputeTask:
    """A compute action; inputs named in ``deps`` are computed here unless ``where`` says."""
    info = {d: DepInfo([], 0, False) for d in deps}
    info.update(where or {})
    return ComputeTask(_sid(), 0.0, key, (priority,), info, resources, clients, SPEC)


def held_by_peer(nbytes: int = 100) -> DepInfo:
    return DepInfo([PEER], nbytes, False)


def success(key: str, duration: float = 0.5) -> ExecuteSuccess:
    return ExecuteSuccess(_sid(), 1.0, key, duration, f"row-{key}")


def failure(key: str) -> ExecuteFailure:
    return ExecuteFailure(_sid(), 1.0, key, 0.1, b"ZeroDivisionError")


def free(*keys: str) -> FreeKeys:
    return FreeKeys(_sid(), 2.0, list(keys))


def run(ws: WorkerState, *events: Event) -> list[Instruction]:
    return ws.handle_stimulus(*events)


# -- instruction filters -----------------------------------------------------------------------


def executed(out: list[Instruction]) -> list[str]:
    return [i.key for i in out if isinstance(i, Execute)]


def fetched(out: list[Instruction]) -> dict[str, DepInfo]:
    wanted: dict[str, DepInfo] = {}
    for i in out:
        if isinstance(i, GatherDep):
            wanted.update(i.wanted)
    return wanted


def released(out: list[Instruction]) -> list[str]:
    return [k for i in out if isinstance(i, ReleaseData) for k in i.keys]


def reported(out: list[Instruction], kind: type) -> list[Any]:
    return [i for i in out if isinstance(i, kind)]


def state_of(ws: WorkerState, key: str) -> WTaskState | None:
    ts = ws.tasks.get(key)
    return ts.state if ts is not None else None


# -- running tasks -----------------------------------------------------------------------------


def test_task_without_inputs_runs_at_once_with_its_spec(ws):
    out = run(ws, compute("x"))

    (ex,) = reported(out, Execute)
    assert (ex.key, ex.spec, ex.inline) == ("x", SPEC, False)
    assert state_of(ws, "x") is WTaskState.EXECUTING and ws.running == 1


def test_finished_task_is_reported_and_kept_in_memory(ws):
    run(ws, compute("x", clients=["client-a"]))

    out = run(ws, success("x"))

    (report,) = reported(out, ReportSuccess)
    assert (report.key, report.row, report.clients) == ("x", "row-x", ["client-a"])
    assert state_of(ws, "x") is WTaskState.MEMORY and ws.running == 0


def test_thread_budget_runs_at_most_nthreads_tasks_highest_priority_first():
    ws = machine(nthreads=2)

    out = run(
        ws, compute("low", priority=5), compute("high", priority=1), compute("mid", priority=3)
    )

    assert executed(out) == ["high", "mid"]
    assert state_of(ws, "low") is WTaskState.READY
    assert executed(run(ws, success("high"))) == ["low"]
    ws.validate_state()


def test_resource_budget_bounds_tasks_needing_a_declared_resource():
    ws = machine(nthreads=4, resources={"GPU": 1})

    out = run(
        ws,
        compute("gpu-a", priority=1, resources={"GPU": 1}),
        compute("gpu-b", priority=2, resources={"GPU": 1}),
        compute("cpu", priority=3),
    )

    assert executed(out) == ["gpu-a", "cpu"]  # gpu-b waits for the GPU, not for a thread
    assert ws.used == {"GPU": 1}
    assert executed(run(ws, success("cpu"))) == []
    assert executed(run(ws, success("gpu-a"))) == ["gpu-b"]
    ws.validate_state()


def test_task_is_quick_once_its_kind_ran_faster_than_a_thread_hand_off(ws):
    run(ws, compute("inc-1"))
    out = run(ws, compute("inc-2"), success("inc-1", duration=0.0001))
    assert [(i.key, i.inline) for i in reported(out, Execute)] == [("inc-2", True)]

    out = run(ws, compute("slow-1"), success("inc-2", duration=0.0001))
    run(ws, success("slow-1", duration=1.0))
    out = run(ws, compute("slow-2"))
    assert [(i.key, i.inline) for i in reported(out, Execute)] == [("slow-2", False)]


def test_a_chains_next_link_is_not_run_inline_even_when_quick(ws):
    run(ws, compute("inc-1"))
    run(ws, success("inc-1", duration=0.0001))
    run(ws, compute("inc-2"), compute("inc-3", "inc-2"), compute("inc-4", priority=1))

    out = run(ws, success("inc-2", duration=0.0001))

    # the link made ready by inc-2 goes to an executor; the stream thread reads (and
    # reports inc-2) meanwhile
    assert [(i.key, i.inline) for i in reported(out, Execute)] == [("inc-3", False)]
    out = run(ws, success("inc-3", duration=0.0001))
    assert [(i.key, i.inline) for i in reported(out, Execute)] == [("inc-4", True)]


def test_paused_worker_starts_nothing_until_unpaused(ws):
    run(ws, Pause(_sid(), 0.0))

    assert executed(run(ws, compute("x"))) == []
    assert state_of(ws, "x") is WTaskState.READY
    assert executed(run(ws, Unpause(_sid(), 1.0))) == ["x"]


def test_compute_for_a_key_already_in_memory_reports_it_without_running(ws):
    run(ws, compute("x"))
    run(ws, success("x"))

    out = run(ws, compute("x", clients=["client-b"]))

    assert executed(out) == []
    (report,) = reported(out, ReportInMemory)
    assert (report.key, report.clients) == ("x", ["client-b"])


def test_duplicate_compute_does_not_run_a_task_twice(ws):
    run(ws, compute("x"))

    out = run(ws, compute("x"))

    assert out == [] and ws.running == 1


def test_failed_task_is_reported_and_forgotten(ws):
    run(ws, compute("x"))

    out = run(ws, failure("x"))

    (report,) = reported(out, ReportError)
    assert (report.key, report.error) == ("x", b"ZeroDivisionError")
    assert "x" not in ws.tasks and ws.running == 0


def test_erred_input_is_kept_for_waiting_dependents_and_can_be_computed_again(ws):
    run(ws, compute("a"), compute("b", "a"))
    run(ws, failure("a"))
    assert state_of(ws, "a") is WTaskState.ERROR  # b still waits on it
    assert state_of(ws, "b") is WTaskState.WAITING

    assert executed(run(ws, compute("a"))) == ["a"]  # a retry
    assert executed(run(ws, success("a"))) == ["b"]


def test_spec_is_loaded_for_new_erred_and_in_flight_keys_only(ws):
    run(ws, compute("a"), compute("b", "a"), compute("c", where={"x": held_by_peer()}))
    run(ws, failure("a"))

    assert [k for k in ("a", "b", "x", "new") if ws.wants_spec(k)] == ["a", "x", "new"]
    assert ws.wanting_specs(["a", "b", "x", "new"]) == {"a", "x", "new"}


def test_one_batch_event_of_computes_places_them_as_single_events_would():
    actions = [
        Compute("a", (2,), {}, None, None, ["c1"]),
        Compute("b", (1,), {"a": DepInfo([], 0, False)}),
        Compute("c", (0,), {"x": held_by_peer()}, {"GPU": 1.0}),
    ]
    one, single = machine(nthreads=1), machine(nthreads=1)
    specs = {"a": SPEC, "b": SPEC, "c": SPEC}

    batched = run(one, ComputeTasks("s", 0.0, actions, specs))
    singly = run(
        single,
        *(ComputeTask("s", 0.0, *a[:3], a.resources, a.clients, SPEC) for a in actions),
    )

    assert batched == singly
    assert {k: (t.state, t.priority, t.clients, t.resources) for k, t in one.tasks.items()} == {
        k: (t.state, t.priority, t.clients, t.resources) for k, t in single.tasks.items()
    }
    assert one.tasks["a"].clients == ["c1"] and one.tasks["c"].resources == {"GPU": 1.0}
    one.validate_state()


def test_erred_input_goes_once_the_scheduler_frees_its_dependents(ws):
    run(ws, compute("a"), compute("b", "a"))
    run(ws, failure("a"))

    run(ws, free("b"))

    assert ws.tasks == {}


# -- inputs ------------------------------------------------------------------------------------


def test_missing_input_is_fetched_once_for_all_its_dependents():
    ws = machine(nthreads=2)

    out = run(
        ws,
        compute("b", where={"a": held_by_peer(100)}),
        compute("c", where={"a": held_by_peer(100)}),
    )

    assert fetched(out) == {"a": held_by_peer(100)}
    assert len(reported(out, GatherDep)) == 1  # one instruction per stimulus
    assert state_of(ws, "a") is WTaskState.FLIGHT
    out = run(ws, GatherDepSuccess(_sid(), 1.0, ["a"]))
    assert sorted(executed(out)) == ["b", "c"]
    assert [r.keys for r in reported(out, ReportReplicas)] == [["a"]]
    ws.validate_state()


def test_task_waits_until_every_missing_input_arrived(ws):
    run(ws, compute("c", where={"a": held_by_peer(), "b": held_by_peer()}))

    assert executed(run(ws, GatherDepSuccess(_sid(), 1.0, ["a"]))) == []
    assert state_of(ws, "c") is WTaskState.WAITING
    assert executed(run(ws, GatherDepSuccess(_sid(), 1.0, ["b"]))) == ["c"]


def test_input_stored_from_redis_makes_the_task_ready_without_a_fetch(ws):
    out = run(
        ws,
        DataArrived(_sid(), 0.0, ["a"], replica=True),
        compute("b", where={"a": DepInfo([PEER], 8, True)}),
    )

    assert fetched(out) == {} and executed(out) == ["b"]
    assert [r.keys for r in reported(out, ReportReplicas)] == [["a"]]


def test_co_assigned_task_waits_for_an_input_computed_here_instead_of_fetching_it(ws):
    out = run(ws, compute("a"), compute("b", "a", priority=1))

    assert fetched(out) == {} and executed(out) == ["a"]
    assert state_of(ws, "b") is WTaskState.WAITING
    assert executed(run(ws, success("a"))) == ["b"]


def test_failed_fetch_reports_the_dependents_missing_and_forgets_them(ws):
    run(ws, compute("b", where={"a": held_by_peer()}), compute("c", where={"a": held_by_peer()}))
    run(ws, compute("d", where={"other": held_by_peer()}))

    out = run(ws, GatherDepFailed(_sid(), 1.0, ["a"], [PEER]))

    missing = sorted((r.key, r.deps, r.tried) for r in reported(out, ReportMissing))
    assert missing == [("b", ["a"], [PEER]), ("c", ["a"], [PEER])]
    assert set(ws.tasks) == {"d", "other"}


def test_failed_fetch_also_fails_what_waits_on_its_dependents(ws):
    run(ws, compute("b", where={"a": held_by_peer()}), compute("c", "b"))

    out = run(ws, GatherDepFailed(_sid(), 1.0, ["a"], [PEER]))

    assert sorted(r.key for r in reported(out, ReportMissing)) == ["b", "c"]
    assert ws.tasks == {}


def test_input_is_fetched_again_after_a_failed_fetch(ws):
    run(ws, compute("b", where={"a": held_by_peer()}))
    run(ws, GatherDepFailed(_sid(), 1.0, ["a"], [PEER]))

    out = run(ws, compute("c", where={"a": held_by_peer()}))

    assert list(fetched(out)) == ["a"]


def test_input_in_flight_that_we_are_asked_to_compute_runs_here_when_the_fetch_fails(ws):
    run(ws, compute("b", where={"a": held_by_peer()}))
    run(ws, compute("a"))  # its holder died: the scheduler recomputes it here

    out = run(ws, GatherDepFailed(_sid(), 1.0, ["a"], [PEER]))

    assert executed(out) == ["a"] and reported(out, ReportMissing) == []
    assert executed(run(ws, success("a"))) == ["b"]


def test_input_in_flight_that_we_are_asked_to_compute_is_reported_when_it_arrives(ws):
    run(ws, compute("b", where={"a": held_by_peer()}))
    run(ws, compute("a", clients=["client-a"]))

    out = run(ws, GatherDepSuccess(_sid(), 1.0, ["a"]))

    assert [(r.key, r.clients) for r in reported(out, ReportInMemory)] == [("a", ["client-a"])]
    assert executed(out) == ["b"]


# -- freeing and cancelling --------------------------------------------------------------------


def test_task_freed_while_executing_is_cancelled_and_its_result_dropped(ws):
    run(ws, compute("x"), compute("y", priority=1))
    run(ws, free("x"))
    assert state_of(ws, "x") is WTaskState.CANCELLED and ws.running == 1  # still on its thread

    out = run(ws, success("x"))

    assert reported(out, ReportSuccess) == [] and released(out) == ["x"]
    assert "x" not in ws.tasks
    assert executed(out) == ["y"]  # its slot went to the next task


def test_cancelled_task_computed_again_counts_its_running_execution(ws):
    run(ws, compute("x"))
    run(ws, free("x"))

    out = run(ws, compute("x"))

    assert executed(out) == []  # not run twice
    assert state_of(ws, "x") is WTaskState.EXECUTING
    assert [r.key for r in reported(run(ws, success("x")), ReportSuccess)] == ["x"]


def test_failure_of_a_cancelled_task_is_not_reported(ws):
    run(ws, compute("x"))
    run(ws, free("x"))

    out = run(ws, failure("x"))

    assert reported(out, ReportError) == [] and ws.tasks == {}


def test_task_freed_before_it_got_a_thread_never_runs(ws):
    run(ws, compute("running"), compute("queued", priority=1))

    run(ws, free("queued"))

    assert "queued" not in ws.tasks
    assert executed(run(ws, success("running"))) == []  # its stale queue entry is skipped


def test_data_fetched_for_a_freed_task_is_dropped_when_it_arrives(ws):
    run(ws, compute("b", where={"a": held_by_peer()}))
    run(ws, free("b"))
    assert "a" not in ws.tasks  # nobody needs the input any more

    out = run(ws, GatherDepSuccess(_sid(), 1.0, ["a"]))

    assert released(out) == ["a"] and executed(out) == []


def test_freeing_held_data_drops_it(ws):
    run(ws, compute("x"))
    run(ws, success("x"))

    out = run(ws, free("x"))

    assert released(out) == ["x"] and ws.tasks == {}


def test_freed_input_stays_until_the_local_task_needing_it_ran(ws):
    run(ws, DataArrived(_sid(), 0.0, ["a"]), compute("b", where={"a": held_by_peer()}))

    assert released(run(ws, free("a"))) == []  # b runs on it now
    assert state_of(ws, "a") is WTaskState.MEMORY

    out = run(ws, success("b"))
    assert released(out) == ["a"] and "a" not in ws.tasks


def test_reset_abandons_running_tasks_and_forgets_everything_else(ws):
    run(ws, compute("running"), compute("queued", priority=1), DataArrived(_sid(), 0.0, ["held"]))

    out = run(ws, ResetState(_sid(), 3.0))

    assert sorted(released(out)) == ["held"]
    assert set(ws.tasks) == {"running"} and state_of(ws, "running") is WTaskState.CANCELLED
    out = run(ws, success("running"))
    assert reported(out, ReportSuccess) == [] and released(out) == ["running"]


# -- stealing ----------------------------------------------------------------------------------


def test_steal_gives_up_a_task_not_started_but_not_one_running():
    ws = machine(nthreads=1)
    run(
        ws,
        compute("running"),
        compute("queued", priority=1),
        compute("b", where={"a": held_by_peer()}),
    )

    out = run(
        ws,
        StealRequest(_sid(), 1.0, "queued"),
        StealRequest(_sid(), 1.0, "b"),
        StealRequest(_sid(), 1.0, "running"),
        StealRequest(_sid(), 1.0, "unknown"),
    )

    answers = [(r.key, r.ok) for r in reported(out, ReportStolen)]
    assert answers == [("queued", True), ("b", True), ("running", False), ("unknown", False)]
    assert set(ws.tasks) == {"running"}  # b's input is no longer fetched for it
    ws.validate_state()


def test_steal_keeps_a_task_that_a_co_assigned_task_here_waits_for(ws):
    run(ws, compute("running"), compute("a", priority=1), compute("b", "a", priority=2))

    out = run(ws, StealRequest(_sid(), 1.0, "a"))

    assert [(r.key, r.ok) for r in reported(out, ReportStolen)] == [("a", False)]
    assert state_of(ws, "a") is WTaskState.READY


# -- secede and rejoin -------------------------------------------------------------------------


def test_seceded_task_gives_its_slot_to_the_next_task_and_is_reported(ws):
    run(ws, compute("parent"), compute("child", priority=1))

    out = run(ws, Secede(_sid(), 1.0, "parent"))

    assert [r.key for r in reported(out, ReportSeceded)] == ["parent"]
    assert executed(out) == ["child"]
    assert state_of(ws, "parent") is WTaskState.LONG_RUNNING


def test_rejoin_waits_for_a_free_slot_and_gets_it_before_ready_tasks(ws):
    run(ws, compute("parent"), compute("child", priority=1), compute("later", priority=2))
    run(ws, Secede(_sid(), 1.0, "parent"))

    assert reported(run(ws, RejoinRequest(_sid(), 1.5, "parent")), RejoinGranted) == []

    out = run(ws, success("child"))
    assert [g.key for g in reported(out, RejoinGranted)] == ["parent"]
    assert executed(out) == []  # the slot went to the rejoining task, not to "later"
    assert state_of(ws, "parent") is WTaskState.EXECUTING
    assert executed(run(ws, success("parent"))) == ["later"]


def test_rejoin_with_a_free_slot_is_granted_at_once(ws):
    run(ws, compute("parent"))
    run(ws, Secede(_sid(), 1.0, "parent"))

    out = run(ws, RejoinRequest(_sid(), 2.0, "parent"))

    assert [g.key for g in reported(out, RejoinGranted)] == ["parent"] and ws.running == 1


def test_seceded_task_keeps_its_resources_until_it_ends():
    ws = machine(nthreads=2, resources={"GPU": 1})
    run(
        ws,
        compute("parent", resources={"GPU": 1}),
        compute("gpu", priority=1, resources={"GPU": 1}),
    )

    assert executed(run(ws, Secede(_sid(), 1.0, "parent"))) == []  # a thread, but no GPU
    assert executed(run(ws, success("parent"))) == ["gpu"]
    ws.validate_state()


# -- the transition table, the log and the checks ----------------------------------------------


def test_illegal_transition_raises(ws):
    run(ws, compute("x"))
    run(ws, success("x"))

    with pytest.raises(InvalidTransition, match="'x': memory -> executing"):
        ws._transition(ws.tasks["x"], WTaskState.EXECUTING)
    assert state_of(ws, "x") is WTaskState.MEMORY


def test_story_tells_a_keys_transitions_with_their_causes(ws):
    first, batch_end, second = compute("x"), compute("y", priority=1), success("x")
    run(ws, first, batch_end)
    run(ws, second)

    story = ws.story("x")

    assert all(isinstance(row, StoryRow) for row in story)
    assert [(r.start, r.finish, r.stimulus_id) for r in story] == [
        ("released", "ready", first.stimulus_id),
        # slots are handed out once the whole stimulus is in (the best task gets one)
        ("ready", "executing", batch_end.stimulus_id),
        ("executing", "memory", second.stimulus_id),
    ]
    assert {r.key for r in ws.story("x", "y")} == {"x", "y"}
    assert story[-1].time == second.time


def test_story_log_is_bounded():
    ws = machine(log_length=3)

    run(ws, compute("x"), compute("y", priority=1))
    run(ws, success("x"))

    assert len(ws.log) == 3
    assert ws.story("x")[-1].finish == "memory"


def test_validate_state_catches_a_broken_cross_reference(ws):
    run(ws, compute("a"), compute("b", "a"))
    ws.tasks["a"].dependents.clear()

    with pytest.raises(AssertionError):
        ws.validate_state()

    ws.tasks["a"].dependents.add("b")  # restored for the fixture's final check


def test_validate_state_catches_a_slot_count_that_drifted(ws):
    run(ws, compute("x"))
    ws.running = 0

    with pytest.raises(AssertionError):
        ws.validate_state()

    ws.running = 1
