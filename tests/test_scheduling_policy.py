"""Scheduling policy in the pure state machine: stealing, seceded tasks, resources, spread,
direct notifications. Events carry their time, so stealing's waiting period is exact."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from rdist.scheduler import stealing
from rdist.scheduler.events import (
    Compute,
    FinishedTask,
    GraphSubmitted,
    Instruction,
    Notify,
    StealRequest,
    StealResponse,
    TaskSeceded,
    TasksFinished,
    TaskSpecMeta,
    WorkerJoined,
)
from rdist.scheduler.state import SchedulerState

W1, W2, W3 = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1", "tcp://10.0.0.3:1"
A = "client-a"
LATER = 10 * stealing.STEAL_AFTER_SECONDS

_ids = itertools.count()


def sid() -> str:
    return f"policy-{next(_ids)}"


def joined(
    address: str, nthreads: int = 1, resources: dict[str, float] | None = None, t: float = 0.0
) -> WorkerJoined:
    return WorkerJoined(sid(), t, address, address, nthreads, resources=resources)


def graph(*tasks: TaskSpecMeta, t: float = 0.0) -> GraphSubmitted:
    return GraphSubmitted(sid(), t, A, list(tasks), [m.key for m in tasks])


def task(key: str, *deps: str, **kwargs: Any) -> TaskSpecMeta:
    return TaskSpecMeta(key, list(deps), **kwargs)


def finished(worker: str, *keys: str, t: float = 0.0, duration: float = 1.0) -> TasksFinished:
    done = [FinishedTask(k, 8, False, None, duration) for k in keys]
    return TasksFinished(sid(), t, worker, done)


def computes(out: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.worker, i.key) for i in out if isinstance(i, Compute)]


def steals(out: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.worker, i.key) for i in out if isinstance(i, StealRequest)]


@pytest.fixture
def state() -> Iterator[SchedulerState]:
    s = SchedulerState()
    yield s
    s.validate_state()


def busy_and_idle(state: SchedulerState) -> None:
    """W1 holds three slow tasks (one running); W2 joins later with nothing to do."""
    state.handle(joined(W1))
    state.durations["slow"] = 0.01  # cheap enough that W1 accepts all three at once
    out = state.handle(graph(task("slow-1"), task("slow-2"), task("slow-3")))
    assert computes(out) == [(W1, "slow-1"), (W1, "slow-2"), (W1, "slow-3")]


# -- stealing --------------------------------------------------------------------------------


def test_long_queued_task_on_a_busy_worker_is_offered_to_an_idle_one(state):
    busy_and_idle(state)

    out = state.handle(joined(W2, t=LATER))

    # lowest priority (submitted last) first; W2 has room for one task
    assert steals(out) == [(W1, "slow-3")]
    assert state.stealing == {"slow-3": (W1, W2)}


def test_confirmed_steal_moves_the_task_to_the_idle_worker(state):
    busy_and_idle(state)
    state.handle(joined(W2, t=LATER))

    out = state.handle(StealResponse(sid(), LATER, W1, "slow-3", True))

    assert computes(out) == [(W2, "slow-3")]
    assert state.tasks["slow-3"].processing_on == W2
    assert "slow-3" not in state.workers[W1].processing
    assert state.stealing == {}
    assert ("slow-3", "processing", "processing") in [e[:3] for e in state.story("slow-3")]


def test_refused_steal_leaves_the_task_where_it_runs(state):
    busy_and_idle(state)
    state.handle(joined(W2, t=LATER))

    out = state.handle(StealResponse(sid(), LATER, W1, "slow-3", False))

    assert computes(out) == []
    assert state.tasks["slow-3"].processing_on == W1


def test_completion_before_the_answer_settles_the_steal(state):
    busy_and_idle(state)
    state.handle(joined(W2, t=LATER))

    state.handle(finished(W1, "slow-3", t=LATER))
    out = state.handle(StealResponse(sid(), LATER, W1, "slow-3", False))

    assert state.tasks["slow-3"].state.value == "memory"
    assert computes(out) == [] and state.stealing == {}


def test_a_task_just_assigned_is_not_stolen(state):
    busy_and_idle(state)

    out = state.handle(joined(W2, t=stealing.STEAL_AFTER_SECONDS / 10))

    assert steals(out) == []


def test_tasks_too_quick_to_be_worth_a_handshake_are_not_stolen(state):
    state.handle(joined(W1))
    state.durations["tiny"] = stealing.MIN_DURATION / 10
    state.handle(graph(*(task(f"tiny-{i}") for i in range(20))))

    out = state.handle(joined(W2, t=LATER))

    assert steals(out) == []


def test_queued_work_goes_to_the_idle_worker_before_any_steal(state):
    state.handle(joined(W1))
    state.handle(graph(*(task(f"slow-{i}") for i in range(4))))  # unknown: one per thread
    assert len(state.workers[W1].processing) == 1

    out = state.handle(joined(W2, t=LATER))

    assert steals(out) == []
    assert computes(out) == [(W2, "slow-1")]


def test_task_needing_a_resource_is_never_stolen_to_a_worker_without_it(state):
    state.handle(joined(W1, resources={"GPU": 2}))
    state.durations["gpu"] = 0.01
    state.handle(graph(task("gpu-1", resources={"GPU": 1}), task("gpu-2", resources={"GPU": 1})))
    assert sorted(state.workers[W1].processing) == ["gpu-1", "gpu-2"]

    out = state.handle(joined(W2, t=LATER))  # idle, but no GPU

    assert steals(out) == []
    out = state.handle(joined(W3, resources={"GPU": 1}, t=2 * LATER))
    assert steals(out) == [(W1, "gpu-2")]


def test_restricted_task_is_not_stolen_to_a_worker_it_may_not_use(state):
    state.handle(joined(W1))
    state.durations["pinned"] = 0.01
    state.handle(graph(task("pinned-1", workers=[W1]), task("pinned-2", workers=[W1])))

    out = state.handle(joined(W2, t=LATER))

    assert steals(out) == []


def test_steal_pending_when_the_victim_leaves_is_dropped(state):
    from rdist.scheduler.events import WorkerLeft

    busy_and_idle(state)
    state.handle(joined(W2, t=LATER))

    state.handle(WorkerLeft(sid(), LATER, W1))

    assert state.stealing == {}
    assert {state.tasks[k].processing_on for k in ("slow-1", "slow-2", "slow-3")} <= {W2, None}


# -- seceded tasks ---------------------------------------------------------------------------


def test_seceded_task_frees_its_thread_for_the_subtasks_it_waits_on(state):
    state.handle(joined(W1))
    state.handle(graph(task("parent")))
    assert computes(state.handle(graph(task("child")))) == []  # the one thread is taken

    out = state.handle(TaskSeceded(sid(), 0.0, W1, "parent"))

    assert computes(out) == [(W1, "child")]
    assert state.workers[W1].long_running == {"parent"}


def test_seceded_task_that_finishes_leaves_no_trace_in_the_accounting(state):
    state.handle(joined(W1))
    state.handle(graph(task("parent")))
    state.handle(TaskSeceded(sid(), 0.0, W1, "parent"))

    state.handle(finished(W1, "parent"))

    ws = state.workers[W1]
    assert ws.long_running == set() and ws.processing == set() and ws.occupancy == 0


def test_secede_report_for_a_task_not_running_there_is_ignored(state):
    state.handle(joined(W1), joined(W2))
    state.handle(graph(task("x")))
    on = state.tasks["x"].processing_on
    other = W2 if on == W1 else W1

    state.handle(TaskSeceded(sid(), 0.0, other, "x"))

    assert state.workers[other].long_running == set()


# -- spread and notifications ---------------------------------------------------------------


def test_independent_tasks_spread_evenly_over_workers(state):
    state.handle(joined(W1, nthreads=2), joined(W2, nthreads=2), joined(W3, nthreads=2))

    out = state.handle(graph(*(task(f"inc-{i}") for i in range(6))))

    per_worker = [w for w, _ in computes(out)]
    assert sorted(per_worker.count(w) for w in (W1, W2, W3)) == [2, 2, 2]


def test_worker_is_told_which_clients_to_notify_and_the_scheduler_does_not_repeat_it(state):
    state.handle(joined(W1))

    out = state.handle(graph(task("x")))
    (compute,) = [i for i in out if isinstance(i, Compute)]
    assert compute.clients == [A]

    out = state.handle(finished(W1, "x"))
    assert [i for i in out if isinstance(i, Notify)] == []


def test_client_that_wants_a_key_after_it_was_assigned_hears_from_the_scheduler(state):
    state.handle(joined(W1))
    state.handle(graph(task("x")))

    state.handle(GraphSubmitted(sid(), 0.0, "client-b", [], ["x"]))
    out = state.handle(finished(W1, "x"))

    assert [(i.client, i.key) for i in out if isinstance(i, Notify)] == [("client-b", "x")]


def test_only_the_tasks_a_lost_worker_was_likely_running_become_suspects(state):
    from rdist.scheduler.events import WorkerLeft

    state.handle(joined(W1))
    state.durations["quick"] = 0.001
    state.handle(graph(*(task(f"quick-{i}") for i in range(5))))
    assert len(state.workers[W1].processing) == 5

    state.handle(WorkerLeft(sid(), 0.0, W1, lost=True))

    assert {k: t.suspicious for k, t in state.tasks.items()} == {
        "quick-0": 1,
        "quick-1": 0,
        "quick-2": 0,
        "quick-3": 0,
        "quick-4": 0,
    }


# -- co-assignment ---------------------------------------------------------------------------


def test_a_chain_goes_to_the_worker_computing_its_start_in_one_batch(state):
    state.handle(joined(W1), joined(W2))

    out = state.handle(graph(task("a"), task("b", "a"), task("c", "b"), task("d", "c")))

    assert [k for _, k in computes(out)] == ["a", "b", "c", "d"]
    assert len({w for w, _ in computes(out)}) == 1
    (b,) = [i for i in out if isinstance(i, Compute) and i.key == "b"]
    assert b.deps == {"a": ([], 0, False)}  # to wait for on that worker, not to fetch


def test_a_task_with_inputs_on_two_workers_is_not_co_assigned(state):
    state.handle(joined(W1), joined(W2))

    # (restricted: unrestricted sibling roots would meet on one worker, see
    # test_scheduler_siblings)
    out = state.handle(graph(task("a", workers=[W1]), task("b", workers=[W2]), task("c", "a", "b")))

    assert sorted(k for _, k in computes(out)) == ["a", "b"]
    assert state.tasks["c"].state.value == "waiting"


def test_co_assigned_tasks_finish_in_order_and_leave_consistent_state(state):
    state.handle(joined(W1))
    state.handle(graph(task("a"), task("b", "a"), task("c", "b")))

    out = state.handle(finished(W1, "a", "b", "c"))

    assert {k: t.state.value for k, t in state.tasks.items()} == {
        "a": "memory",
        "b": "memory",
        "c": "memory",
    }
    assert computes(out) == []


def test_failure_at_the_start_of_a_co_assigned_chain_errs_and_frees_the_rest(state):
    from rdist.scheduler.events import FreeKeys, TaskErred

    state.handle(joined(W1))
    state.handle(graph(task("a"), task("b", "a"), task("c", "b")))

    out = state.handle(TaskErred(sid(), 0.0, W1, "a", b"boom"))

    assert {k: t.state.value for k, t in state.tasks.items()} == {
        "a": "erred",
        "b": "erred",
        "c": "erred",
    }
    assert sorted(k for i in out if isinstance(i, FreeKeys) for k in i.keys) == ["b", "c"]


def test_input_that_may_be_retried_elsewhere_gets_no_co_assigned_dependents(state):
    state.handle(joined(W1))

    out = state.handle(graph(task("a", retries=1), task("b", "a")))

    assert [k for _, k in computes(out)] == ["a"]


def test_co_assigned_dependents_wait_at_the_scheduler_again_when_their_input_is_released(state):
    from rdist.scheduler.events import FreeKeys, WorkerLeft

    state.handle(joined(W1), joined(W2))
    state.handle(graph(task("a"), task("b", "a")))
    first = state.tasks["a"].processing_on

    out = state.handle(WorkerLeft(sid(), 0.0, first))

    other = W2 if first == W1 else W1
    assert computes(out) == [(other, "a"), (other, "b")]
    assert not [i for i in out if isinstance(i, FreeKeys)]  # nothing to free on the dead one


def test_task_waiting_on_a_co_assigned_input_is_never_stolen(state):
    state.handle(joined(W1))
    state.durations["slow"] = 0.01
    state.handle(graph(task("slow-1"), task("slow-2", "slow-1"), task("slow-3", "slow-2")))

    out = state.handle(joined(W2, t=LATER))

    assert steals(out) == []
