"""Every change of a task's state goes through the transition table, and the bounded,
always-on transition log tells each key's story (pure tier: no Redis).

The strongest check replays the log: for every key, the logged ``(start, finish)`` pairs
must chain from ``released`` to the state the task is in now, each pair one the table
knows. A state change made by hand -- not through the table -- breaks the chain.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler.model import TRANSITION_LOG_LENGTH, TS, InvalidTransition
from rdist.scheduler.state import SchedulerState, task_record
from rdist.scheduler.transitions import TRANSITIONS
from tests.test_scheduler_state import (
    W1,
    W2,
    A,
    B,
    _RandomDriver,
    _sid,
    erred,
    finished,
    forgotten,
    joined,
    left,
    notifies,
    of_type,
    released,
    st,
    state,
    submit,
    task,
)

__all__ = ["state"]  # the fixture, imported for pytest

_PAIRS = {(start.value, finish.value) for start, finish in TRANSITIONS}


def assert_log_replays(s: SchedulerState) -> None:
    """Every key's logged transitions chain through the table to its present state."""
    assert len(s.transition_log) < (s.transition_log.maxlen or 0), "log overflowed: test too big"
    lives: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in s.story(*{key for key, *_ in s.transition_log}):
        lives[row.key].append((row.start, row.finish))
    for key, pairs in lives.items():
        now = "released"  # every task starts there (and starts again after forgotten)
        for start, finish in pairs:
            if now == "forgotten":
                now = "released"
            assert (start, finish) in _PAIRS, f"{key}: {start} -> {finish} is not in the table"
            assert start == now, f"{key}: logged {start} -> {finish} while it was {now}"
            now = finish
        assert now == st(s, key), f"{key}: the log ends in {now}, the task is {st(s, key)}"
    for key, ts in s.tasks.items():  # tasks never logged never left released
        if key not in lives:
            assert ts.state is TS.RELEASED, key


@pytest.mark.parametrize("seed", range(8))
def test_random_scenarios_change_task_states_only_through_the_table(seed):
    driver = _RandomDriver(seed)
    for _ in range(250):
        driver.step()
    driver.drain()

    assert_log_replays(driver.state)


def test_an_erred_cascade_logs_each_dependent(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("a"), task("b", "a"), task("c", "b"), wanted=["c"]))

    state.handle(erred(W1, "a"))

    assert [(r.start, r.finish) for r in state.story("c")][-1] == ("waiting", "erred")
    assert [(r.start, r.finish) for r in state.story("b")][-2:] == [
        ("waiting", "erred"),
        ("erred", "released"),  # nobody wants b: its failure lives on in c
    ]
    assert_log_replays(state)


def test_a_confirmed_steal_is_a_logged_processing_to_processing_transition():
    s = SchedulerState()
    s.handle(ev.WorkerJoined(_sid(), 0.0, W1, W1, 1))
    s.durations["slow"] = 0.01
    s.handle(submit(A, task("slow-1"), task("slow-2"), task("slow-3")))
    s.handle(ev.WorkerJoined(_sid(), 1.0, W2, W2, 1))
    [request] = [k for k, _ in s.stealing.items()]

    s.handle(ev.StealResponse(_sid(), 1.0, W1, request, True))

    assert [(r.start, r.finish) for r in s.story(request)][-1] == ("processing", "processing")
    assert s.tasks[request].processing_on == W2
    assert_log_replays(s)
    s.validate_state()


def test_restart_forgets_every_task_through_the_table(state):
    state.handle(joined(W1), joined(W2))
    state.handle(
        submit(
            A,
            task("done"),
            task("running", "done"),
            task("pinned", workers=["tcp://nowhere:1"]),
            task("broken"),
        )
    )
    state.handle(finished(W1, "done"), erred(W2, "broken"))
    assert {st(state, k) for k in ("done", "running", "pinned", "broken")} == {
        "memory",
        "processing",
        "no-worker",
        "erred",
    }

    out = state.handle(ev.RestartRequested(_sid(), 0.0, A))

    assert state.tasks == {}
    assert sorted(forgotten(out)) == ["broken", "done", "pinned", "running"]
    assert sorted(k for _, k, status in notifies(out) if status == "cancelled") == [
        "broken",
        "done",
        "pinned",
        "running",
    ]
    assert of_type(out, ev.RestartWorkers) == [ev.RestartWorkers([W1, W2], A)]
    assert all(not ws.processing and not ws.has_what for ws in state.workers.values())
    assert_log_replays(state)


def test_a_long_chain_is_restarted_without_recursion_error(state):
    state.handle(joined(W1))
    chain = [task("link-0")] + [task(f"link-{i}", f"link-{i - 1}") for i in range(1, 3000)]
    state.handle(submit(A, *chain, wanted=["link-2999"]))

    state.handle(ev.RestartRequested(_sid(), 0.0, A))

    assert state.tasks == {}


def test_restore_places_each_task_through_the_table():
    old = SchedulerState()
    old.handle(joined(W1, nthreads=3))
    old.handle(submit(A, task("held"), task("fails"), task("runs")))
    old.handle(finished(W1, "held"), erred(W1, "fails"))
    records = {key: task_record(ts) for key, ts in old.tasks.items()}
    assert {r.state for r in records.values()} == {"memory", "erred", "processing"}

    new = SchedulerState()
    out = new.handle(ev.StateRestored(_sid(), 5.0, records, {W1: wire.WorkerRecord(W1, W1, 3)}, {}))

    assert [(r.start, r.finish) for r in new.story("held", "fails", "runs")] == [
        ("released", "memory"),
        ("released", "erred"),
        ("released", "processing"),
    ]
    assert of_type(out, ev.Compute) == [] and notifies(out) == []  # nothing said twice
    assert_log_replays(new)
    new.validate_state()


def test_a_restored_task_whose_dependency_record_was_lost_errs_naming_it():
    old = SchedulerState()
    old.handle(submit(A, task("lost"), task("child", "lost"), wanted=["child"]))
    records = {"child": task_record(old.tasks["child"])}  # the record of "lost" is gone

    new = SchedulerState()
    out = new.handle(ev.StateRestored(_sid(), 0.0, records, {}, {}))

    assert st(new, "child") == "erred"
    [note] = of_type(out, ev.Notify)
    assert note.client == A and "'lost'" in note.info["error_text"]
    new.validate_state()


def test_the_restore_only_pairs_refuse_ordinary_callers(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(released(A, "x"), submit(B, task("y"), wanted=[]))
    ts = state.tasks["y"]
    assert ts.state is TS.RELEASED

    with pytest.raises(TypeError):  # the ordinary keyword of an assignment
        state.transition(ts, TS.PROCESSING, worker=state.workers[W1])
    with pytest.raises(TypeError):  # an error without the stored failure
        state.transition(ts, TS.ERRED)

    assert ts.state is TS.RELEASED


def test_a_pair_missing_from_the_table_raises(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x")))
    state.handle(finished(W1, "x"))

    with pytest.raises(InvalidTransition, match="'x': memory -> waiting"):
        state.transition(state.tasks["x"], TS.WAITING)
    with pytest.raises(InvalidTransition, match="'x': memory -> forgotten"):
        state.transition(state.tasks["x"], TS.FORGOTTEN)


# -- the log and the story ---------------------------------------------------------------


def test_the_transition_log_is_on_and_bounded_by_default():
    s = SchedulerState()

    assert s.transition_log.maxlen == TRANSITION_LOG_LENGTH
    s.handle(submit(A, task("x")))  # (no worker yet)
    assert [(r.start, r.finish) for r in s.story("x")] == [
        ("released", "waiting"),
        ("waiting", "no-worker"),
    ]


def test_the_transition_log_keeps_only_the_newest_records():
    s = SchedulerState(log_length=50)
    s.handle(joined(W1, nthreads=100))
    keys = [f"t-{i}" for i in range(40)]

    s.handle(submit(A, *(task(k) for k in keys)))  # two transitions each
    s.handle(finished(W1, *keys))  # and two or three more each

    assert len(s.transition_log) == 50
    # the oldest went first: of the first task only its completion is left
    assert [(r.start, r.finish) for r in s.story(keys[0])] == [("processing", "memory")]
    assert len(s.story(keys[-1])) == 3


def test_story_tells_a_keys_transitions_with_stimulus_and_event_time(state):
    state.handle(joined(W1))
    submitted = ev.GraphSubmitted("graph-1", 10.0, A, [task("x")], ["x"])
    state.handle(submitted)
    state.handle(ev.TasksFinished("done-1", 12.5, W1, [ev.FinishedTask("x", 8, False, None, 0.1)]))
    state.handle(ev.KeysReleased("release-1", 13.0, A, ["x"]))

    assert state.story("x") == [
        wire.StoryRow("x", "released", "waiting", "graph-1", 10.0),
        wire.StoryRow("x", "waiting", "processing", "graph-1", 10.0),
        wire.StoryRow("x", "processing", "memory", "done-1", 12.5),
        wire.StoryRow("x", "memory", "released", "release-1", 13.0),
        wire.StoryRow("x", "released", "forgotten", "release-1", 13.0),
    ]
    assert [r.key for r in state.story("done-1")] == ["x"]  # by stimulus, too
    assert state.story("unknown") == []


def test_a_story_request_is_answered_with_the_schedulers_records(state):
    state.handle(joined(W1))
    state.handle(submit(A, task("x"), task("y")))

    out = state.handle(ev.StoryRequested(_sid(), 1.0, B, "req-7", ["x"]))

    [answer] = of_type(out, ev.SendStory)
    assert (answer.client, answer.id) == (B, "req-7")
    assert answer.records == state.story("x") and {r.key for r in answer.records} == {"x"}
    assert wire.CLIENT.decode_one(wire.StoryReply("req-7", "scheduler", answer.records).encode())


def test_a_lost_worker_reschedules_through_the_table(state):
    state.handle(joined(W1), joined(W2))
    state.handle(submit(A, task("a", workers=[W1]), task("b", "a", workers=[W2])))
    state.handle(finished(W1, "a"))

    state.handle(left(W1))

    assert [(r.start, r.finish) for r in state.story("a")][-3:] == [
        ("memory", "released"),
        ("released", "waiting"),
        ("waiting", "no-worker"),
    ]
    assert_log_replays(state)
