"""After Redis lost data (pure tier): the scheduler reconciles what workers re-announce
with the graphs clients re-submit, in either order; the epoch says when to rebuild; the
client's journal re-submits what its futures need, dependencies first."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from rdist.client.recovery import Journal
from rdist.protocol import wire
from rdist.scheduler import reconcile
from rdist.scheduler.events import (
    Compute,
    FreeKeys,
    GraphSubmitted,
    Instruction,
    KeysHeld,
    Notify,
    TaskSpecMeta,
    WorkerJoined,
)
from rdist.scheduler.state import SchedulerState
from rdist.store.epoch import EpochWatch

W1, W2 = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1"
A = "client-a"
_ids = itertools.count()


def sid() -> str:
    return f"loss-{next(_ids)}"


@pytest.fixture
def s() -> Iterator[SchedulerState]:
    state = SchedulerState(direct_notify=False, coassign=False)
    state.handle(WorkerJoined(sid(), 0.0, W1, W1, 1))
    state.handle(WorkerJoined(sid(), 0.0, W2, W2, 1))
    yield state
    state.validate_state()


def graph(*tasks: tuple[str, list[str]], t: float = 1.0) -> GraphSubmitted:
    metas = [TaskSpecMeta(key, deps) for key, deps in tasks]
    return GraphSubmitted(
        sid(), t, A, metas, [m.key for m in metas], specs={m.key: b"spec" for m in metas}
    )


def held(worker: str, t: float = 1.0, **keys: int) -> KeysHeld:
    return KeysHeld(sid(), t, worker, dict(keys))


def computed(out: list[Instruction]) -> list[str]:
    return [i.key for i in out if isinstance(i, Compute)]


def told(out: list[Instruction]) -> list[str]:
    return [i.item.key for i in out if isinstance(i, Notify) and hasattr(i.item, "who_has")]


def freed(out: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.worker, k) for i in out if isinstance(i, FreeKeys) for k in i.keys]


def test_keys_re_announced_before_the_graph_start_in_memory_and_only_the_rest_runs(
    s: SchedulerState,
) -> None:
    s.handle(held(W1, a=8))
    out = s.handle(graph(("a", []), ("b", ["a"])))

    assert s.tasks["a"].state.value == "memory" and s.tasks["a"].who_has == {W1}
    assert computed(out) == ["b"]  # a is not run again
    assert "a" in told(out)  # its future hears where it is
    assert not s.held


def test_a_graph_re_submitted_first_takes_the_results_re_announced_after_it(
    s: SchedulerState,
) -> None:
    keys = [f"a{i}" for i in range(20)]
    s.handle(graph(*[(k, []) for k in keys], ("c", keys)))
    waiting = [k for k in keys if s.tasks[k].state.value == "queued"]
    assert waiting  # more tasks than the workers take at once

    out = s.handle(held(W2, **{k: 8 for k in waiting}))

    assert all(s.tasks[k].state.value == "memory" for k in waiting)
    assert all(s.tasks[k].who_has == {W2} for k in waiting)
    assert not set(computed(out)) & set(waiting)  # not run again
    assert set(waiting) <= set(told(out))  # their futures hear where they are


def test_a_task_running_on_the_announcer_finishes_and_elsewhere_its_copy_is_freed(
    s: SchedulerState,
) -> None:
    s.handle(graph(("a", [])))
    runner = s.tasks["a"].processing_on
    other = W2 if runner == W1 else W1
    s.handle(graph(("z", [])))  # keep the other worker busy: no state change for a

    out = s.handle(held(other, a=8))
    assert freed(out) == [(other, "a")] and s.tasks["a"].state.value == "processing"

    s.handle(held(runner, a=8))
    assert s.tasks["a"].state.value == "memory" and s.tasks["a"].who_has == {runner}


def test_re_announced_keys_nobody_claims_are_freed_after_a_while(s: SchedulerState) -> None:
    s.handle(held(W1, t=1.0, orphan=8))
    assert "orphan" in s.held

    out = s.handle(held(W2, t=2.0 + reconcile.HELD_SECONDS, other=1))

    assert freed(out) == [(W1, "orphan")] and "orphan" not in s.held


def test_the_held_keys_message_round_trips_and_refuses_a_negative_size() -> None:
    msg = wire.HeldKeys(W1, {"a": 3})
    assert wire.SCHEDULER.decode(msg.encode(), "sched") == [msg]
    bad = wire.pack({"op": "held-keys", "worker": W1, "keys": {"a": -1}})
    with pytest.raises(wire.MalformedMessage):
        wire.SCHEDULER.decode(bad, "sched")


def test_the_epoch_watch_fires_once_on_a_new_epoch_even_after_it_vanished() -> None:
    watch = EpochWatch()
    watch.start(b"e1")  # as of joining: no news
    assert not watch.changed("e1")
    assert not watch.changed(None) and watch.lost  # FLUSHALL: wait for the new one
    assert watch.changed(b"e2") and not watch.lost
    assert not watch.changed(b"e2")
    assert watch.changed(b"e3")  # a fail-over's new epoch, without a gap


def test_a_process_that_joined_before_any_epoch_acts_on_the_first_it_sees() -> None:
    watch = EpochWatch()
    watch.start(None)  # started before any scheduler led
    assert not watch.changed(None)
    assert watch.changed(b"e1")  # it may have missed a loss: act once, it is idempotent
    assert not watch.changed(b"e1")


def _update(*rows: tuple[str, list[str]]) -> wire.UpdateGraph:
    return wire.UpdateGraph(
        A,
        tasks=[wire.TaskRow(k, d) for k, d in rows],
        wanted=[k for k, _ in rows],
        specs={k: k.encode() for k, _ in rows},
        funcs={b"h" * 16: b"f"},
    )


def test_the_journal_re_submits_what_held_keys_need_dependencies_first() -> None:
    journal = Journal()
    journal.record(_update(("a", []), ("b", ["a"])), None, list)
    journal.record(_update(("c", ["b"]), ("x", [])), {b"g" * 16: b"g"}, list)

    rows, specs, funcs = journal.graph_for(["c"])

    assert [r.key for r in rows] == ["a", "b", "c"]
    assert specs == {"a": b"a", "b": b"b", "c": b"c"}
    assert set(funcs) == {b"h" * 16, b"g" * 16}


def test_the_journal_forgets_what_no_held_key_needs_once_it_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rdist.client import recovery

    monkeypatch.setattr(recovery, "JOURNAL_MIN", 3)
    journal = Journal()
    journal.record(_update(("a", []), ("b", ["a"])), None, list)
    journal.record(_update(("c", []), ("d", [])), None, lambda: ["b"])

    assert len(journal) == 2
    assert [r.key for r in journal.graph_for(["b", "c"])[0]] == ["a", "b"]
