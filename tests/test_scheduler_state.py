"""The scheduler's pure state machine: events in, instructions out, no Redis.

Every test drives :class:`SchedulerState` only through events (except the one that calls
``transition`` directly) and ends with ``validate_state()`` through the ``state`` fixture.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from rdist.scheduler.events import (
    ClientLeft,
    Compute,
    DataScattered,
    DropResult,
    FinishedTask,
    ForgetTask,
    FreeKeys,
    GraphSubmitted,
    Instruction,
    KeysCancelled,
    KeysReleased,
    Notify,
    PersistTasks,
    RetryRequested,
    TaskErred,
    TasksFinished,
    TaskSpecMeta,
    WorkerJoined,
    WorkerLeft,
)
from rdist.scheduler.state import (
    FIRE_AND_FORGET,
    InvalidTransition,
    SchedulerState,
    TaskState,
)

W1, W2, W3 = "tcp://10.0.0.1:9001", "tcp://10.0.0.2:9001", "tcp://10.0.0.3:9001"
A, B, C = "client-a", "client-b", "client-c"

_stimuli = itertools.count()


def _sid() -> str:
    return f"test-{next(_stimuli)}"


# -- event builders ----------------------------------------------------------------------


def joined(
    address: str,
    nthreads: int = 1,
    name: str | None = None,
    resources: dict[str, float] | None = None,
) -> WorkerJoined:
    return WorkerJoined(_sid(), 0.0, address, name or address, nthreads, resources=resources)


def left(address: str) -> WorkerLeft:
    return WorkerLeft(_sid(), 0.0, address)


def task(key: str, *deps: str, **kwargs: Any) -> TaskSpecMeta:
    return TaskSpecMeta(key, list(deps), **kwargs)


def submit(
    client: str, *tasks: TaskSpecMeta, wanted: list[str] | None = None, faf: list[str] | None = None
) -> GraphSubmitted:
    """A graph; by default the client wants every key in it."""
    keys = [t.key for t in tasks] if wanted is None else wanted
    return GraphSubmitted(_sid(), 0.0, client, list(tasks), keys, faf or [])


def finished(
    worker: str, *keys: str, nbytes: int = 8, in_redis: bool = False, duration: float = 0.1
) -> TasksFinished:
    return TasksFinished(
        _sid(), 0.0, worker, [FinishedTask(k, nbytes, in_redis, None, duration) for k in keys]
    )


def erred(worker: str, key: str, error: bytes = b"ZeroDivisionError") -> TaskErred:
    return TaskErred(_sid(), 0.0, worker, key, error)


def released(client: str, *keys: str) -> KeysReleased:
    return KeysReleased(_sid(), 0.0, client, list(keys))


def cancelled(client: str, *keys: str, force: bool = False) -> KeysCancelled:
    return KeysCancelled(_sid(), 0.0, client, list(keys), force)


# -- instruction filters -----------------------------------------------------------------


def computes(out: list[Instruction]) -> list[tuple[str, str]]:
    """``(worker, key)`` of every Compute, in emission order."""
    return [(i.worker, i.key) for i in out if isinstance(i, Compute)]


def computed_keys(out: list[Instruction]) -> list[str]:
    return [i.key for i in out if isinstance(i, Compute)]


def notifies(out: list[Instruction]) -> list[tuple[str, str, str]]:
    return [(i.client, i.key, i.status) for i in out if isinstance(i, Notify)]


def freed(out: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.worker, k) for i in out if isinstance(i, FreeKeys) for k in i.keys]


def forgotten(out: list[Instruction]) -> list[str]:
    return [i.key for i in out if isinstance(i, ForgetTask)]


def dropped(out: list[Instruction]) -> list[str]:
    return [i.key for i in out if isinstance(i, DropResult)]


def of_type(out: list[Instruction], kind: type) -> list[Any]:
    return [i for i in out if isinstance(i, kind)]


@pytest.fixture
def state() -> Iterator[SchedulerState]:
    """The core alone: notifications from the scheduler (``direct_notify`` off) and no
    co-assignment (tests/test_scheduling_policy.py covers both)."""
    s = SchedulerState(direct_notify=False, coassign=False)
    yield s
    s.validate_state()


def st(s: SchedulerState, key: str) -> str:
    """The state of ``key`` as a string, ``forgotten`` when the scheduler dropped it."""
    ts = s.tasks.get(key)
    return "forgotten" if ts is None else ts.state.value


# -- ordering and notification -----------------------------------------------------------


def test_dependency_chain_runs_each_task_only_after_its_dependency_is_in_memory(state):
    state.handle(joined(W1, nthreads=4))

    out = state.handle(submit(A, task("a"), task("b", "a"), task("c", "b"), wanted=["c"]))
    assert computed_keys(out) == ["a"]
    assert (st(state, "b"), st(state, "c")) == ("waiting", "waiting")

    out = state.handle(finished(W1, "a"))
    assert computed_keys(out) == ["b"]
    assert notifies(out) == []

    out = state.handle(finished(W1, "b"))
    assert computed_keys(out) == ["c"]
    compute_c = of_type(out, Compute)[0]
    assert compute_c.deps == {"b": ([W1], 8, False)}

    out = state.handle(finished(W1, "c"))
    assert computed_keys(out) == []
    assert notifies(out) == [(A, "c", "memory")]


def test_finished_task_notifies_exactly_the_clients_that_want_it(state):
    state.handle(joined(W1, nthreads=2))
    state.handle(submit(A, task("x")), submit(B, task("x")), submit(C, task("y")))

    out = state.handle(finished(W1, "x", nbytes=123))

    assert sorted(notifies(out)) == [(A, "x", "memory"), (B, "x", "memory")]
    info = of_type(out, Notify)[0].info
    assert info["nbytes"] == 123 and info["who_has"] == [W1] and info["redis"] is False


def test_inline_result_travels_on_the_notification(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))

    out = state.handle(
        TasksFinished(_sid(), 0.0, W1, [FinishedTask("x", 3, True, b"abc", 0.1, "int")])
    )

    (note,) = of_type(out, Notify)
    assert note.info["inline"] == b"abc" and note.info["redis"] is True
    assert note.info["type"] == "int"


def test_key_wanted_after_it_finished_is_answered_at_once_without_recompute(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(finished(W1, "x"))

    out = state.handle(submit(B, task("x")))

    assert computes(out) == []
    assert notifies(out) == [(B, "x", "memory")]


def test_state_changes_are_persisted_for_the_tasks_hash(state):
    state.handle(joined(W1))

    out = state.handle(submit(A, task("x")))

    (persist,) = of_type(out, PersistTasks)
    assert list(persist.records) == ["x"]
    record = persist.records["x"]
    assert record.state == "processing" and record.processing_on == W1
    assert record.who_wants == [A]


# -- refcounting and lifetime ------------------------------------------------------------


def test_key_released_by_one_client_is_kept_for_the_other(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")), submit(B, task("x")))
    state.handle(finished(W1, "x"))

    out = state.handle(released(A, "x"))

    assert freed(out) == [] and forgotten(out) == []
    assert st(state, "x") == "memory"
    assert state.tasks["x"].who_wants == {B}


def test_key_is_forgotten_and_its_data_freed_when_both_clients_release_it(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")), submit(B, task("x")))
    state.handle(finished(W1, "x", in_redis=True))
    state.handle(released(A, "x"))

    out = state.handle(released(B, "x"))

    assert freed(out) == [(W1, "x")]
    assert dropped(out) == ["x"]
    assert forgotten(out) == ["x"]
    assert "x" not in state.tasks


def test_releasing_a_key_the_client_does_not_hold_changes_nothing(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(finished(W1, "x"))

    out = state.handle(released(B, "x"), released(C, "never-submitted"))

    assert out == []
    assert st(state, "x") == "memory"


def test_dependency_is_kept_while_a_wanted_dependent_needs_it(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a")))
    state.handle(finished(W1, "a"))
    assert st(state, "b") == "processing"

    # when the client drops its future for the dependency
    out = state.handle(released(A, "a"))
    # then the data stays: the running dependent still needs it
    assert freed(out) == [] and forgotten(out) == []
    assert st(state, "a") == "memory"

    # when the dependent finishes, nothing needs the dependency's data any more
    out = state.handle(finished(W1, "b"))
    assert freed(out) == [(W1, "a")]
    assert st(state, "a") == "released"  # lineage is kept while "b" exists

    out = state.handle(released(A, "b"))
    assert sorted(forgotten(out)) == ["a", "b"]
    assert state.tasks == {}


def test_dependency_released_before_its_dependent_starts_is_still_computed_and_kept(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a")))

    out = state.handle(released(A, "a"))
    assert forgotten(out) == [] and freed(out) == []
    assert st(state, "a") == "processing"

    out = state.handle(finished(W1, "a"))
    assert notifies(out) == []  # nobody holds a future for "a" any more
    assert computed_keys(out) == ["b"]


def test_intermediate_results_are_freed_once_no_dependent_needs_them(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), task("c", "b"), wanted=["c"]))
    state.handle(finished(W1, "a", in_redis=True))

    out = state.handle(finished(W1, "b"))
    assert freed(out) == [(W1, "a")]
    assert dropped(out) == ["a"]

    out = state.handle(finished(W1, "c"))
    assert freed(out) == [(W1, "b")]
    assert dropped(out) == []  # "b" lived on the worker only
    assert (st(state, "a"), st(state, "b"), st(state, "c")) == ("released", "released", "memory")


def test_shared_dependency_is_freed_only_after_its_last_dependent_finishes(state):
    state.handle(joined(W1, nthreads=2))
    state.handle(submit(A, task("a"), task("b", "a"), task("c", "a"), wanted=["b", "c"]))
    state.handle(finished(W1, "a"))

    out = state.handle(finished(W1, "b"))
    assert freed(out) == []

    out = state.handle(finished(W1, "c"))
    assert freed(out) == [(W1, "a")]


def test_pure_key_submitted_by_two_clients_is_computed_once(state):
    state.handle(joined(W1, nthreads=4))

    out = state.handle(submit(A, task("inc-123")), submit(B, task("inc-123")))

    assert computes(out) == [(W1, "inc-123")]
    assert state.tasks["inc-123"].who_wants == {A, B}


def test_resubmitting_a_forgotten_key_computes_it_again(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(finished(W1, "x"))
    assert forgotten(state.handle(released(A, "x"))) == ["x"]

    out = state.handle(submit(A, task("x")))

    assert computes(out) == [(W1, "x")]


# -- priorities and queueing -------------------------------------------------------------


def test_queued_tasks_run_by_user_priority_then_submission_order(state):
    state.handle(joined(W1, nthreads=1))
    state.handle(submit(A, task("blocker")))
    state.handle(submit(A, task("first-1"), task("second-1")))
    state.handle(submit(B, task("late-1"), task("urgent-1", priority=10)))
    assert {st(state, k) for k in ["first-1", "second-1", "late-1", "urgent-1"]} == {"queued"}

    order = []
    running = "blocker"
    for _ in range(4):
        out = state.handle(finished(W1, running))
        (running,) = computed_keys(out)
        order.append(running)

    assert order == ["urgent-1", "first-1", "second-1", "late-1"]


def test_unknown_task_kind_runs_one_task_per_thread_and_queues_the_rest(state):
    state.handle(joined(W1, nthreads=2))

    out = state.handle(submit(A, *[task(f"inc-{i}") for i in range(10)]))

    assert computed_keys(out) == ["inc-0", "inc-1"]
    assert [st(state, f"inc-{i}") for i in range(2, 10)] == ["queued"] * 8
    assert state.workers[W1].processing == {"inc-0", "inc-1"}


def test_queued_tasks_fill_the_worker_as_tasks_finish(state):
    state.handle(joined(W1, nthreads=2))
    state.handle(submit(A, *[task(f"slow-{i}") for i in range(5)]))

    out = state.handle(finished(W1, "slow-0", duration=5.0))

    assert computed_keys(out) == ["slow-2"]
    assert len(state.workers[W1].processing) == 2


def test_more_tasks_than_threads_are_sent_once_short_durations_are_learned(state):
    state.handle(joined(W1, nthreads=2))
    state.handle(submit(A, *[task(f"inc-{i}") for i in range(10)]))

    state.handle(finished(W1, "inc-0", duration=0.001))
    state.handle(finished(W1, "inc-1", duration=0.001))

    assert len(state.workers[W1].processing) > 2
    assert not any(st(state, f"inc-{i}") == "queued" for i in range(10))


def test_independent_tasks_spread_over_workers(state):
    state.handle(joined(W1), joined(W2))

    out = state.handle(submit(A, task("x-1"), task("x-2")))

    assert sorted(w for w, _ in computes(out)) == [W1, W2]


def test_queued_tasks_go_to_a_worker_that_joins_later(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x-1"), task("x-2")))
    assert st(state, "x-2") == "queued"

    out = state.handle(joined(W2))

    assert computes(out) == [(W2, "x-2")]


def test_tasks_submitted_before_any_worker_exists_run_when_one_joins(state):
    state.handle(submit(A, task("x")))
    assert st(state, "x") == "no-worker"

    out = state.handle(joined(W1))

    assert computes(out) == [(W1, "x")]


# -- restrictions and locality -----------------------------------------------------------


def test_restricted_task_runs_only_on_the_named_address(state):
    state.handle(joined(W1), joined(W2))

    out = state.handle(submit(A, task("x-1", workers=[W2]), task("x-2", workers=[W2])))

    assert computes(out) == [(W2, "x-1")]
    assert st(state, "x-2") == "queued"  # W2's one thread is busy, W1 is not allowed
    out = state.handle(finished(W2, "x-1", duration=5.0))
    assert computes(out) == [(W2, "x-2")]


def test_restriction_by_worker_name(state):
    state.handle(joined(W1, name="alice"), joined(W2, name="bob"))

    out = state.handle(submit(A, task("x", workers=["bob"])))

    assert computes(out) == [(W2, "x")]


def test_task_restricted_to_an_absent_worker_waits_in_no_worker_until_it_joins(state):
    state.handle(joined(W1))

    out = state.handle(submit(A, task("x", workers=[W3])))
    assert computes(out) == []
    assert st(state, "x") == "no-worker"

    out = state.handle(joined(W3))
    assert computes(out) == [(W3, "x")]


def test_loose_restriction_falls_back_to_other_workers(state):
    state.handle(joined(W1))

    out = state.handle(submit(A, task("x", workers=[W3], loose=True)))

    assert computes(out) == [(W1, "x")]


def test_loose_restriction_prefers_the_named_worker_when_present(state):
    state.handle(joined(W1), joined(W2))

    out = state.handle(submit(A, task("x", workers=[W2], loose=True)))

    assert computes(out) == [(W2, "x")]


def test_restricted_task_returns_to_no_worker_when_its_worker_leaves(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x", workers=[W2])))

    out = state.handle(left(W2))

    assert computes(out) == []
    assert st(state, "x") == "no-worker"
    assert computes(state.handle(joined(W2))) == [(W2, "x")]


def test_queued_restricted_task_moves_to_no_worker_when_its_worker_leaves(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x-1", workers=[W2]), task("x-2", workers=[W2])))
    assert st(state, "x-2") == "queued"

    state.handle(left(W2))

    assert (st(state, "x-1"), st(state, "x-2")) == ("no-worker", "no-worker")


def test_task_runs_on_the_worker_holding_most_input_bytes(state):
    state.handle(joined(W1, nthreads=2), joined(W2, nthreads=2))
    state.handle(
        DataScattered(_sid(), 0.0, A, [("small", [W1], 10, False), ("big", [W2], 10_000, False)])
    )

    out = state.handle(submit(A, task("sum", "small", "big")))

    (compute,) = of_type(out, Compute)
    assert compute.worker == W2
    assert compute.deps == {"small": ([W1], 10, False), "big": ([W2], 10_000, False)}


def test_locality_follows_the_bytes_not_the_number_of_inputs(state):
    state.handle(joined(W1, nthreads=2), joined(W2, nthreads=2))
    state.handle(
        DataScattered(
            _sid(),
            0.0,
            A,
            [("s1", [W1], 10, False), ("s2", [W1], 10, False), ("big", [W2], 1_000, False)],
        )
    )

    out = state.handle(submit(A, task("f", "s1", "s2", "big")))

    assert computes(out) == [(W2, "f")]


def test_task_with_large_inputs_is_pinned_to_their_busy_holder(state):
    state.handle(joined(W1), joined(W2))
    state.handle(DataScattered(_sid(), 0.0, A, [("huge", [W2], 50 << 20, False)]))
    state.handle(submit(A, task("busy", workers=[W2])))

    out = state.handle(submit(A, task("f", "huge")))

    assert computes(out) == [(W2, "f")]


def test_scattered_data_is_in_memory_for_the_scattering_client_without_compute(state):
    state.handle(joined(W1))

    out = state.handle(DataScattered(_sid(), 0.0, A, [("d", [W1], 100, True)]))

    assert computes(out) == []
    assert notifies(out) == [(A, "d", "memory")]
    assert st(state, "d") == "memory"
    assert state.tasks["d"].who_wants == {A}
    assert forgotten(state.handle(released(A, "d"))) == ["d"]


def test_task_needing_a_resource_runs_only_on_a_worker_declaring_it(state):
    state.handle(joined(W1, nthreads=4), joined(W2, nthreads=4, resources={"GPU": 1}))

    out = state.handle(submit(A, task("train", resources={"GPU": 1})))

    (compute,) = of_type(out, Compute)
    assert (compute.worker, compute.resources) == (W2, {"GPU": 1})


def test_resource_bounds_how_many_such_tasks_run_at_once_on_a_worker(state):
    state.handle(joined(W1, nthreads=4, resources={"GPU": 1}))

    out = state.handle(
        submit(
            A,
            task("gpu-1", resources={"GPU": 1}),
            task("gpu-2", resources={"GPU": 1}),
            task("cpu-1"),
        )
    )

    assert sorted(computed_keys(out)) == ["cpu-1", "gpu-1"]
    assert st(state, "gpu-2") == "queued"
    assert computed_keys(state.handle(finished(W1, "gpu-1"))) == ["gpu-2"]


def test_task_needing_a_resource_nobody_has_waits_in_no_worker(state):
    state.handle(joined(W1, nthreads=4))

    state.handle(submit(A, task("train", resources={"GPU": 2})))
    assert st(state, "train") == "no-worker"

    out = state.handle(joined(W2, resources={"GPU": 2}))
    assert computes(out) == [(W2, "train")]


# -- errors and retries ------------------------------------------------------------------


def test_error_propagates_to_dependents_with_the_original_error_and_blame(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), task("c", "b"), wanted=["b", "c"]))

    out = state.handle(erred(W1, "a", b"pickled-ZeroDivisionError"))

    assert sorted(notifies(out)) == [(A, "b", "erred"), (A, "c", "erred")]
    for note in of_type(out, Notify):
        assert note.info["error"] == b"pickled-ZeroDivisionError"
        assert note.info["blame"] == "a"
    assert (st(state, "b"), st(state, "c")) == ("erred", "erred")
    assert state.tasks["c"].error == b"pickled-ZeroDivisionError"
    assert state.tasks["c"].blame == "a"


def test_failing_task_does_not_block_unrelated_tasks(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("bad"), task("good")))

    out = state.handle(erred(W1, "bad"))

    assert computed_keys(out) == ["good"]
    assert notifies(out) == [(A, "bad", "erred")]


def test_dependent_submitted_after_its_dependency_erred_errs_at_once(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a")))
    state.handle(erred(W1, "a", b"boom"))

    out = state.handle(submit(A, task("b", "a"), wanted=["b"]))

    assert computes(out) == []
    (note,) = of_type(out, Notify)
    assert (note.key, note.status, note.info["error"], note.info["blame"]) == (
        "b",
        "erred",
        b"boom",
        "a",
    )


def test_dependent_errs_cleanly_when_waking_its_released_dependency_hits_an_old_error(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("bad"), task("mid", "bad"), task("ok"), wanted=["bad", "ok"]))
    state.handle(erred(W1, "bad", b"boom"), finished(W1, "ok"))
    assert (st(state, "mid"), st(state, "bad")) == ("released", "erred")

    out = state.handle(submit(B, task("top", "mid", "ok")))

    assert computes(out) == []
    assert notifies(out) == [(B, "top", "erred")]
    assert of_type(out, Notify)[0].info == {"blame": "bad", "error": b"boom"}


def test_task_with_retries_is_rerun_before_it_errs(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("flaky", retries=2)))

    for _ in range(2):
        out = state.handle(erred(W1, "flaky"))
        assert computes(out) == [(W1, "flaky")]
        assert notifies(out) == []

    out = state.handle(erred(W1, "flaky", b"third failure"))
    assert computes(out) == []
    assert notifies(out) == [(A, "flaky", "erred")]
    assert of_type(out, Notify)[0].info["error"] == b"third failure"


def test_retry_requested_reruns_the_erred_task_and_its_erred_dependents(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), wanted=["b"]))
    state.handle(erred(W1, "a"))
    assert st(state, "b") == "erred"

    out = state.handle(RetryRequested(_sid(), 0.0, A, ["b"]))
    assert computes(out) == [(W1, "a")]
    assert st(state, "b") == "waiting"

    out = state.handle(finished(W1, "a"))
    assert computes(out) == [(W1, "b")]
    out = state.handle(finished(W1, "b"))
    assert notifies(out) == [(A, "b", "memory")]


def test_retry_of_a_key_that_is_not_erred_changes_nothing(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(finished(W1, "x"))

    out = state.handle(RetryRequested(_sid(), 0.0, A, ["x", "unknown"]))

    assert computes(out) == [] and notifies(out) == []
    assert st(state, "x") == "memory"


def test_error_from_a_worker_the_task_is_not_processing_on_is_ignored(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x", workers=[W1])))

    out = state.handle(erred(W2, "x"))

    assert out == []
    assert st(state, "x") == "processing"


def test_task_depending_on_an_unknown_key_errs_with_a_clear_message(state):
    state.handle(joined(W1))

    out = state.handle(submit(A, task("child", "ghost"), wanted=["child"]))

    assert computes(out) == []
    (note,) = of_type(out, Notify)
    assert (note.key, note.status) == ("child", "erred")
    assert "ghost" in note.info["error_text"] and "child" in note.info["error_text"]
    assert "error" not in note.info


# -- cancellation ------------------------------------------------------------------------


def test_cancel_affects_only_the_cancelling_client(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")), submit(B, task("x")))

    out = state.handle(cancelled(A, "x"))

    assert notifies(out) == [(A, "x", "cancelled")]
    assert freed(out) == []
    assert st(state, "x") == "processing"
    assert state.tasks["x"].who_wants == {B}
    assert notifies(state.handle(finished(W1, "x"))) == [(B, "x", "memory")]


def test_forced_cancel_cancels_the_key_for_every_client(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")), submit(B, task("x")))

    out = state.handle(cancelled(A, "x", force=True))

    assert sorted(notifies(out)) == [(A, "x", "cancelled"), (B, "x", "cancelled")]
    assert freed(out) == [(W1, "x")]
    assert forgotten(out) == ["x"]


def test_cancel_cancels_dependents_too(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), task("c", "b")))

    out = state.handle(cancelled(A, "a"))

    assert sorted(notifies(out)) == [
        (A, "a", "cancelled"),
        (A, "b", "cancelled"),
        (A, "c", "cancelled"),
    ]
    assert freed(out) == [(W1, "a")]
    assert state.tasks == {}


def test_non_forced_cancel_leaves_another_clients_dependent_alone(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a")), submit(B, task("a"), task("b", "a"), wanted=["b"]))

    out = state.handle(cancelled(A, "a"))

    assert notifies(out) == [(A, "a", "cancelled")]
    assert st(state, "a") == "processing" and st(state, "b") == "waiting"


def test_cancelling_an_unknown_key_still_answers_cancelled(state):
    out = state.handle(cancelled(A, "never-seen"))

    assert notifies(out) == [(A, "never-seen", "cancelled")]


# -- fire and forget, clients leaving ----------------------------------------------------


def test_fire_and_forget_task_keeps_running_after_its_client_releases_it(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("side-effect")))
    state.handle(submit(A, wanted=[], faf=["side-effect"]))
    assert state.tasks["side-effect"].who_wants == {A, FIRE_AND_FORGET}

    out = state.handle(released(A, "side-effect"))
    assert freed(out) == [] and forgotten(out) == []
    assert st(state, "side-effect") == "processing"

    out = state.handle(finished(W1, "side-effect"))
    assert notifies(out) == []
    assert freed(out) == [(W1, "side-effect")]
    assert forgotten(out) == ["side-effect"]


def test_fire_and_forget_task_survives_its_client_leaving(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), wanted=["b"], faf=["b"]))

    out = state.handle(ClientLeft(_sid(), 0.0, A))

    assert freed(out) == [] and forgotten(out) == []
    assert computed_keys(state.handle(finished(W1, "a"))) == ["b"]
    out = state.handle(finished(W1, "b"))
    assert sorted(forgotten(out)) == ["a", "b"]
    assert state.tasks == {}


def test_erred_fire_and_forget_task_is_dropped_without_notifying_anyone(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x"), wanted=[], faf=["x"]))

    out = state.handle(erred(W1, "x"))

    assert notifies(out) == []
    assert forgotten(out) == ["x"]


def test_fire_and_forget_of_a_finished_task_drops_only_the_pseudo_client(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(finished(W1, "x"))

    out = state.handle(submit(A, wanted=[], faf=["x"]))

    assert forgotten(out) == []
    assert state.tasks["x"].who_wants == {A}
    assert "x" not in state.clients[FIRE_AND_FORGET]


def test_client_leaving_releases_everything_it_held(state):
    state.handle(joined(W1, nthreads=2))
    state.handle(submit(A, task("mine"), task("shared")), submit(B, task("shared")))
    state.handle(finished(W1, "mine", "shared"))

    out = state.handle(ClientLeft(_sid(), 0.0, A))

    assert freed(out) == [(W1, "mine")]
    assert forgotten(out) == ["mine"]
    assert st(state, "shared") == "memory"
    assert A not in state.clients


def test_client_leaving_stops_its_running_and_queued_work(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("run-1"), task("run-2")))
    assert st(state, "run-2") == "queued"

    out = state.handle(ClientLeft(_sid(), 0.0, A))

    assert freed(out) == [(W1, "run-1")]
    assert sorted(forgotten(out)) == ["run-1", "run-2"]
    assert state.workers[W1].processing == set()


# -- workers leaving ---------------------------------------------------------------------


def test_worker_leaving_reschedules_its_processing_tasks(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x", workers=[W1], loose=True)))

    out = state.handle(left(W1))

    assert computes(out) == [(W2, "x")]
    assert W1 not in state.workers


def test_result_held_only_by_a_lost_worker_is_recomputed(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x", workers=[W1], loose=True)))
    state.handle(finished(W1, "x", in_redis=False))

    out = state.handle(left(W1))

    assert computes(out) == [(W2, "x")]
    assert st(state, "x") == "processing"


def test_result_stored_in_redis_survives_the_loss_of_its_worker(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x", workers=[W1], loose=True)))
    state.handle(finished(W1, "x", in_redis=True))

    out = state.handle(left(W1))

    assert computes(out) == []
    assert st(state, "x") == "memory"
    assert state.tasks["x"].who_has == set()


def test_lost_dependency_is_recomputed_before_its_waiting_dependent(state):
    state.handle(joined(W1), joined(W2))
    state.handle(
        submit(
            A,
            task("a", workers=[W1], loose=True),
            task("blocker", workers=[W2]),
            task("b", "a", workers=[W2]),
        )
    )
    state.handle(finished(W1, "a", in_redis=False))
    assert st(state, "b") == "queued"  # W2 is busy with "blocker"

    out = state.handle(left(W1))

    assert computes(out) == []  # W2 is still busy
    assert st(state, "a") == "queued"
    assert st(state, "b") == "waiting" and state.tasks["b"].waiting_on == {"a"}
    assert computes(state.handle(finished(W2, "blocker", duration=5.0))) == [(W2, "a")]
    assert computes(state.handle(finished(W2, "a", duration=5.0))) == [(W2, "b")]


def test_lost_result_is_recomputed_from_its_lineage(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("a", workers=[W1], loose=True), task("b", "a"), wanted=["b"]))
    assert computes(state.handle(finished(W1, "a"))) == [(W1, "b")]  # where its input is
    state.handle(finished(W1, "b"))
    assert st(state, "a") == "released" and state.tasks["b"].who_has == {W1}

    out = state.handle(left(W1))

    assert computes(out) == [(W2, "a")]
    assert st(state, "b") == "waiting"
    assert computes(state.handle(finished(W2, "a"))) == [(W2, "b")]
    assert notifies(state.handle(finished(W2, "b"))) == [(A, "b", "memory")]


def test_released_lineage_key_is_recomputed_when_a_client_wants_it_again(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), wanted=["b"]))
    state.handle(finished(W1, "a"))
    state.handle(finished(W1, "b"))
    assert st(state, "a") == "released"

    out = state.handle(submit(B, task("a")))

    assert computes(out) == [(W1, "a")]
    assert notifies(state.handle(finished(W1, "a"))) == [(B, "a", "memory")]


def test_leaving_of_an_unknown_worker_changes_nothing(state):
    assert state.handle(left(W3)) == []


# -- idempotence and late messages -------------------------------------------------------


def test_duplicate_task_finished_changes_nothing(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), wanted=["b"]))
    state.handle(finished(W1, "a"))
    before = {k: (t.state, set(t.who_has), t.nbytes) for k, t in state.tasks.items()}

    out = state.handle(finished(W1, "a"))

    assert all(isinstance(i, PersistTasks) for i in out), out  # at most a rewrite, no action
    assert {k: (t.state, set(t.who_has), t.nbytes) for k, t in state.tasks.items()} == before


def test_late_finish_from_a_worker_the_task_is_not_processing_on_is_freed(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("x", workers=[W1])))

    out = state.handle(finished(W2, "x"))

    assert freed(out) == [(W2, "x")]
    assert notifies(out) == []
    assert st(state, "x") == "processing" and state.tasks["x"].processing_on == W1


def test_finish_of_a_forgotten_key_is_freed_on_that_worker(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(released(A, "x"))

    out = state.handle(finished(W1, "x"))

    assert freed(out) == [(W1, "x")]
    assert "x" not in state.tasks


def test_illegal_transition_raises_and_leaves_the_task_as_it_was(state):
    state.handle(submit(A, task("a"), task("b", "a"), wanted=["b"]))
    ts = state.tasks["b"]
    assert ts.state is TaskState.WAITING

    with pytest.raises(InvalidTransition, match="'b': waiting -> memory"):
        state.transition(ts, TaskState.MEMORY)

    assert ts.state is TaskState.WAITING


def test_story_records_the_transitions_of_a_key_with_their_stimulus(state):
    state.handle(joined(W1))
    event = submit(A, task("x"))
    state.handle(event)

    story = state.story("x")

    assert [(row.start, row.finish) for row in story] == [
        ("released", "waiting"),
        ("waiting", "processing"),
    ]
    assert {row.stimulus_id for row in story} == {event.stimulus_id}


# -- scale -------------------------------------------------------------------------------


CHAIN = 5_000


def _chain() -> list[TaskSpecMeta]:
    return [task("link-0")] + [task(f"link-{i}", f"link-{i - 1}") for i in range(1, CHAIN)]


def test_long_chain_can_be_submitted_and_forgotten_without_recursion_error(state):
    state.handle(joined(W1))
    out = state.handle(submit(A, *_chain(), wanted=[f"link-{CHAIN - 1}"]))
    assert computed_keys(out) == ["link-0"]

    out = state.handle(released(A, f"link-{CHAIN - 1}"))

    assert len(forgotten(out)) == CHAIN
    assert state.tasks == {}


def test_long_computed_chain_can_be_released_without_recursion_error(state):
    state.handle(joined(W1))
    state.handle(submit(A, *_chain(), wanted=[f"link-{CHAIN - 1}"]))
    for i in range(CHAIN):
        state.handle(finished(W1, f"link-{i}"))
    assert st(state, f"link-{CHAIN - 1}") == "memory"

    out = state.handle(ClientLeft(_sid(), 0.0, A))

    assert len(forgotten(out)) == CHAIN
    assert state.tasks == {}


def test_long_chain_errs_all_the_way_down_without_recursion_error(state):
    state.handle(joined(W1))
    state.handle(submit(A, *_chain(), wanted=[f"link-{CHAIN - 1}"]))

    out = state.handle(erred(W1, "link-0"))

    assert notifies(out) == [(A, f"link-{CHAIN - 1}", "erred")]
    assert of_type(out, Notify)[0].info["blame"] == "link-0"


def test_losing_one_input_of_a_queued_task_keeps_its_other_inputs(state):
    state.handle(joined(W1), joined(W2))
    state.handle(
        submit(
            A,
            task("a", workers=[W1], loose=True),
            task("c", workers=[W2]),
            task("b", "a", "c", workers=[W2]),
            wanted=["b"],
        )
    )
    state.handle(submit(A, task("blocker", workers=[W2])))
    state.handle(finished(W2, "c", duration=5.0))
    state.handle(finished(W1, "a", duration=5.0))
    assert (st(state, "b"), st(state, "c")) == ("queued", "memory")

    out = state.handle(left(W1))

    assert freed(out) == []  # "c" on W2 is still good
    # "a" runs again at once beside its sibling "c" (W2 is busy, but near room)
    assert computes(out) == [(W2, "a")]
    assert st(state, "c") == "memory"
    assert st(state, "b") == "waiting" and state.tasks["b"].waiting_on == {"a"}
    assert computes(state.handle(finished(W2, "blocker"))) == []
    out = state.handle(finished(W2, "a"))
    assert computes(out) == [(W2, "b")]
    assert of_type(out, Compute)[0].deps["c"] == ([W2], 8, False)


# -- random event sequences --------------------------------------------------------------


class _RandomDriver:
    """Feeds a SchedulerState random but plausible events, checking invariants after each."""

    WORKERS = [f"tcp://10.0.1.{i}:9001" for i in range(4)]
    CLIENTS = ["c1", "c2", "c3"]

    def __init__(self, seed: int) -> None:
        import random

        self.rng = random.Random(seed)
        self.state = SchedulerState()
        self.counter = 0
        self.log: list[Any] = []

    def worker_joined(self, address: str, nthreads: int) -> WorkerJoined:
        gpu = {"GPU": 1} if address[-6] in "02" else None
        return WorkerJoined(_sid(), 0.0, address, f"name-{address[-6]}", nthreads, resources=gpu)

    def new_graph(self) -> GraphSubmitted:
        rng, metas = self.rng, []
        existing = list(self.state.tasks)
        for _ in range(rng.randint(1, 4)):
            pool = existing + [m.key for m in metas]
            deps = rng.sample(pool, min(len(pool), rng.randint(0, 2)))
            kwargs: dict[str, Any] = {"priority": rng.choice([0, 0, 0, -1, 2])}
            if rng.random() < 0.15:
                kwargs["workers"] = [rng.choice(self.WORKERS + ["name-1"])]
                kwargs["loose"] = rng.random() < 0.5
            if rng.random() < 0.1:
                kwargs["retries"] = 1
            if rng.random() < 0.1:
                kwargs["resources"] = {"GPU": 1}
            metas.append(task(f"t{rng.randint(0, 3)}-{self.counter}", *deps, **kwargs))
            self.counter += 1
        if existing and rng.random() < 0.3:
            metas.append(task(rng.choice(existing)))  # a pure key submitted again
        keys = [m.key for m in metas]
        wanted = rng.sample(keys, rng.randint(1, len(keys)))
        faf = [k for k in wanted if rng.random() < 0.1]
        return submit(rng.choice(self.CLIENTS), *metas, wanted=wanted, faf=faf)

    def client_event(self) -> Any:
        rng = self.rng
        client = rng.choice(self.CLIENTS)
        held = sorted(self.state.clients.get(client, ()))
        if not held:
            return None
        roll = rng.random()
        if roll < 0.5:
            return released(client, *rng.sample(held, rng.randint(1, len(held))))
        if roll < 0.75:
            return cancelled(client, rng.choice(held), force=rng.random() < 0.3)
        if roll < 0.9:
            return RetryRequested(_sid(), 0.0, client, held)
        return ClientLeft(_sid(), 0.0, client)

    def next_event(self) -> Any:
        rng, s = self.rng, self.state
        live = sorted(s.workers)
        processing = sorted((t.processing_on, t.key) for t in s.tasks.values() if t.processing_on)
        roll = rng.random()
        if roll < 0.08:
            return self.worker_joined(rng.choice(self.WORKERS), rng.randint(1, 2))
        if roll < 0.12 and live:
            return left(rng.choice(live))
        if roll < 0.35:
            return self.new_graph()
        if roll < 0.65 and processing:
            worker, key = rng.choice(processing)
            if rng.random() < 0.85:
                return finished(
                    worker,
                    key,
                    nbytes=rng.randint(1, 10**7),
                    in_redis=rng.random() < 0.3,
                    duration=rng.choice([0.001, 0.1, 2.0]),
                )
            return erred(worker, key)
        if roll < 0.7 and live and s.tasks:  # stale or duplicate reports
            key = rng.choice(sorted(s.tasks))
            return (
                finished(rng.choice(live), key)
                if rng.random() < 0.7
                else erred(rng.choice(live), key)
            )
        if roll < 0.73 and live:
            return DataScattered(
                _sid(),
                0.0,
                rng.choice(self.CLIENTS),
                [(f"data-{self.counter}", [rng.choice(live)], 100, False)],
            )
        return self.client_event()

    def check(self) -> None:
        s = self.state
        s.validate_state()
        for key, ts in s.tasks.items():
            assert not (ts.who_wants and ts.state is TaskState.RELEASED), f"{key} wanted, released"
            for dep in ts.waiting_on:
                assert s.tasks[dep].state is not TaskState.RELEASED, f"{key} waits on idle {dep}"

    def step(self) -> None:
        event = self.next_event()
        if event is None:
            return
        self.counter += 1
        self.log.append(event)
        self.state.handle(event)
        self.check()

    def drain(self) -> None:
        """Every worker back (with every resource), every task run to its end."""
        s = self.state
        s.handle(*[left(w) for w in sorted(s.workers)])
        s.handle(
            *[
                WorkerJoined(_sid(), 0.0, w, f"name-{w[-6]}", 2, resources={"GPU": 1})
                for w in self.WORKERS
            ]
        )
        self.check()
        while running := sorted(
            (t.processing_on, t.key) for t in s.tasks.values() if t.processing_on
        ):
            s.handle(finished(*running[0], duration=0.01))
            self.check()


@pytest.mark.parametrize("seed", range(12))
def test_random_event_sequences_keep_the_state_consistent_and_finish_wanted_tasks(seed):
    driver = _RandomDriver(seed)

    try:
        for _ in range(250):
            driver.step()
        driver.drain()
    except Exception as exc:
        recent = "\n".join(repr(e) for e in driver.log[-5:])
        raise AssertionError(f"seed {seed}: {exc!r}; last events:\n{recent}") from exc

    s = driver.state
    for key, ts in s.tasks.items():
        if ts.who_wants:
            assert ts.state in (TaskState.MEMORY, TaskState.ERRED), (key, ts.state)
        else:
            assert ts.state is TaskState.RELEASED, (key, ts.state)  # no leaked data
    assert not s.no_worker and not any(ws.processing for ws in s.workers.values())


# -- placement once per batch ------------------------------------------------------------


def test_entries_handled_without_placement_are_placed_once_at_the_end_of_the_batch(state):
    state.handle(joined(W1, nthreads=2))
    out = state.handle(submit(A, task("a"), task("b"), task("c"), task("d")))
    assert computed_keys(out) == ["a", "b"]

    # given a batch: a finishes, and the client releases c, in two entries
    first = state.handle(finished(W1, "a"), flush=False, place=False)
    second = state.handle(released(A, "c"), flush=False, place=False)
    # then nothing is placed entry by entry: placed after the first, c would be sent to W1
    # only to be freed by the second
    assert computed_keys(first + second) == []
    assert freed(first + second) == []
    # and the batch's one placement sends the next queued task to the freed thread
    last = state.place()
    assert computed_keys(last) == ["d"]
    assert freed(last) == []
    assert st(state, "c") == "forgotten"
