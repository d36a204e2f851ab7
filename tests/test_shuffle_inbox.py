"""The exchange's pure parts: the inbox of received pieces (memory, disk, runs again), the
owners of output partitions, and the scheduler's restart of a group of tasks."""

from __future__ import annotations

import pytest

from rdist.scheduler import events as ev
from rdist.shuffle.inbox import Inbox, PiecesGone
from rdist.shuffle.plan import assign_owners


def piece(n: int, fill: int = 1) -> list[bytes]:
    return [bytes([fill]) * n, b"x" * 3]


def test_pieces_come_out_by_input_and_again_from_disk(tmp_path):
    inbox = Inbox(str(tmp_path))
    inbox.add("s:0", 2, {0: piece(10, 2), 1: piece(5)})
    inbox.add("s:0", 0, {0: piece(10, 0)})
    first = inbox.take("s:0", 0)
    assert [src for src, _ in first] == [0, 2]
    assert inbox.take("s:0", 1)[0][1] == piece(5)
    assert inbox.memory_bytes == 0
    # an unpack that runs again (its result was lost) finds the same pieces on disk
    again = inbox.take("s:0", 0)
    assert [(s, [bytes(f) for f in fr]) for s, fr in again] == [
        (s, [bytes(f) for f in fr]) for s, fr in first
    ]
    inbox.add("s:0", 3, {0: piece(10, 3)})  # a late piece of a taken partition: ignored
    assert len(inbox.take("s:0", 0)) == 2


def test_a_forgotten_exchange_gives_no_pieces_but_says_so(tmp_path):
    inbox = Inbox(str(tmp_path))
    inbox.add("s:0", 0, {0: piece(10)})
    inbox.take("s:0", 0)
    inbox.forget("s:0")
    with pytest.raises(PiecesGone):
        inbox.take("s:0", 0)


def test_an_idle_exchange_is_forgotten_after_its_retention(tmp_path, monkeypatch):
    import rdist.shuffle.inbox as inbox_module

    now = [1000.0]
    monkeypatch.setattr(inbox_module.time, "monotonic", lambda: now[0])
    inbox = Inbox(str(tmp_path), retain_seconds=60)
    inbox.add("old:0", 0, {0: piece(10)})
    now[0] += 61
    inbox.add("new:0", 0, {0: piece(10)})  # activity elsewhere sweeps the idle one
    assert not inbox.holds("old:0") and inbox.holds("new:0")


def test_a_transfer_sent_again_replaces_its_pieces(tmp_path):
    inbox = Inbox(str(tmp_path))
    inbox.add("s:0", 1, {0: piece(10, 1)})
    inbox.add("s:0", 1, {0: piece(10, 1)})
    assert inbox.memory_bytes == 13
    assert len(inbox.take("s:0", 0)) == 1


def test_beyond_its_budget_the_largest_partitions_go_to_disk_and_come_back(tmp_path):
    inbox = Inbox(str(tmp_path), memory_budget=100)
    inbox.add("s:0", 0, {0: piece(80, 7), 1: piece(10)})
    inbox.add("s:0", 1, {0: piece(40, 8)})
    assert inbox.spilled_bytes > 0
    assert inbox.memory_bytes <= 50
    inbox.add("s:0", 0, {0: piece(80, 7)})  # sent again after it spilled: not doubled
    got = inbox.take("s:0", 0)
    assert [(src, [bytes(f) for f in frames]) for src, frames in got] == [
        (0, piece(80, 7)),
        (1, piece(40, 8)),
    ]
    assert [bytes(f) for f in inbox.take("s:0", 1)[0][1]] == piece(10)
    inbox.forget("s:0")
    assert not list(tmp_path.glob("rdist-shuffle-*/*"))  # its files went with it


def test_forgetting_a_run_drops_memory_and_disk(tmp_path):
    inbox = Inbox(str(tmp_path), memory_budget=10)
    inbox.add("s:0", 0, {0: piece(40), 1: piece(1)})
    inbox.add("t:0", 0, {0: piece(1)})
    inbox.forget("s:0")
    assert not inbox.holds("s:0") and inbox.holds("t:0")
    with pytest.raises(PiecesGone):
        inbox.take("s:0", 0)
    inbox.close()
    assert not list(tmp_path.iterdir())


def test_owners_are_contiguous_ranges_over_the_sorted_workers():
    assert assign_owners(5, ["b", "a"]) == ("a", "a", "a", "b", "b")
    assert assign_owners(2, ["c", "a", "b"]) == ("a", "b")
    with pytest.raises(RuntimeError, match="live worker"):
        assign_owners(3, [])


def test_restarted_tasks_run_again_and_their_dependents_wait_for_them():
    """Given an exchange whose two transfers and barrier are done and one unpack finished,
    one queued-or-running: TasksRestarted frees the transfers' and the barrier's results and
    runs them again; the unpack not done yet waits for the new barrier."""
    from rdist.scheduler.state import SchedulerState
    from tests.test_scheduler_state import computed_keys, finished, freed, joined, st, submit, task

    s = SchedulerState(direct_notify=False, coassign=False)
    s.handle(joined("tcp://w:1", nthreads=4))
    graph = [
        task("in-0"),
        task("in-1"),
        task("t-0", "in-0"),
        task("t-1", "in-1"),
        task("b", "t-0", "t-1"),
        task("u-0", "b"),
        task("u-1", "b"),
    ]
    s.handle(submit("c1", *graph, wanted=["u-0", "u-1"]))
    for keys in (["in-0", "in-1"], ["t-0", "t-1"], ["b"], ["u-0"]):
        s.handle(finished("tcp://w:1", *keys))
    assert (st(s, "t-0"), st(s, "b"), st(s, "u-0"), st(s, "u-1")) == (
        "released",
        "memory",
        "memory",
        "processing",
    )
    out = s.handle(ev.TasksRestarted("x", 0.0, "tcp://w:1", ["t-0", "t-1", "b"]))
    assert ("tcp://w:1", "b") in freed(out)
    assert set(computed_keys(out)) == {"in-0", "in-1"}  # inputs first: they were released
    assert st(s, "b") == "waiting"
    assert st(s, "u-0") == "memory"  # finished before the restart: kept
    for keys in (["in-0", "in-1"], ["t-0", "t-1"]):
        out = s.handle(finished("tcp://w:1", *keys))
    assert computed_keys(out) == ["b"]
    s.validate_state()


def test_restarting_unknown_or_waiting_tasks_changes_nothing():
    from rdist.scheduler.state import SchedulerState
    from tests.test_scheduler_state import joined, st, submit, task

    s = SchedulerState(direct_notify=False, coassign=False)
    s.handle(joined("tcp://w:1"))
    s.handle(submit("c1", task("a"), task("b", "a"), wanted=["b"]))
    out = s.handle(ev.TasksRestarted("x", 0.0, "tcp://w:1", ["b", "nope"]))
    assert st(s, "b") == "waiting"
    assert out == [] or all(type(i).__name__ != "Compute" for i in out)
    s.validate_state()
