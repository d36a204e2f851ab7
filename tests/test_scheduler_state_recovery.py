"""A scheduler restarted mid-graph (pure tier): the state rebuilt from the records its
predecessor left must not strand a task on a worker -- the chaos suite's hangs."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

from rdist.protocol.wire import WorkerRecord
from rdist.scheduler import stealing
from rdist.scheduler.events import (
    Compute,
    FreeKeys,
    GraphSubmitted,
    Instruction,
    StateRestored,
    StealRequest,
    StealResponse,
    TaskSpecMeta,
    WorkerJoined,
)
from rdist.scheduler.state import SchedulerState, TaskState, task_record

W1, W2, DEAD = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1", "tcp://10.0.0.9:1"
A = "client-a"
LATER = 10 * stealing.STEAL_AFTER_SECONDS
_ids = itertools.count()


def sid() -> str:
    return f"recovery-{next(_ids)}"


def joined(address: str, t: float = 0.0) -> WorkerJoined:
    return WorkerJoined(sid(), t, address, address, 1)


def graph(*tasks: TaskSpecMeta) -> GraphSubmitted:
    return GraphSubmitted(sid(), 0.0, A, list(tasks), [m.key for m in tasks])


def task(key: str, *deps: str) -> TaskSpecMeta:
    return TaskSpecMeta(key, list(deps))


def restarted(
    old: SchedulerState,
    live: list[str],
    t: float = 0.0,
    edit: dict[str, dict[str, Any]] | None = None,
) -> tuple[SchedulerState, list[Instruction]]:
    """A new scheduler restored from ``old``'s records, with ``live`` workers heartbeating."""
    records = {k: task_record(ts) for k, ts in old.tasks.items()}
    for key, changes in (edit or {}).items():
        records[key] = dataclasses.replace(records[key], **changes)
    new = SchedulerState()
    out = new.handle(StateRestored(sid(), t, records, {a: WorkerRecord(a, a, 1) for a in live}, {}))
    return new, out


def steals(out: list[Instruction]) -> list[tuple[str, str]]:
    return [(i.worker, i.key) for i in out if isinstance(i, StealRequest)]


def test_restore_keeps_a_co_assigned_task_waiting_for_its_input_so_neither_is_stolen():
    # b waits on W1 for a, which W1 is computing (co-assigned); the scheduler restarts
    old = SchedulerState()
    old.handle(joined(W1))
    old.handle(graph(task("a"), task("b", "a")))
    assert old.tasks["b"].processing_on == W1 and old.tasks["b"].waiting_on == {"a"}
    new, _ = restarted(old, [W1])

    # an idle worker joins: moving a (or b) would leave b waiting on W1 for data never coming
    out = new.handle(joined(W2, t=LATER))

    assert steals(out) == []
    assert new.tasks["b"].waiting_on == {"a"}
    new.validate_state()


def test_restore_sends_back_a_co_assigned_task_whose_input_died_with_another_worker():
    # b was co-assigned to W1 to wait for a; the records say a ran on a worker now dead
    old = SchedulerState()
    old.handle(joined(W1))
    old.handle(graph(task("a"), task("b", "a")))
    new, out = restarted(old, [W1, W2], edit={"a": {"processing_on": DEAD}})

    # a is recomputed; b may only wait for it where a runs, or at the scheduler
    a, b = new.tasks["a"], new.tasks["b"]
    assert a.state is TaskState.PROCESSING
    assert b.state is TaskState.WAITING or (
        b.processing_on == a.processing_on and b.waiting_on == {"a"}
    )
    assert (W1, "b") in [(i.worker, k) for i in out if isinstance(i, FreeKeys) for k in i.keys]
    new.validate_state()


def test_steal_confirmed_for_a_request_of_the_previous_scheduler_reassigns_the_task():
    # the old scheduler asked W1 to give up slow-3; W1 did, but the answer reached only
    # the scheduler that restored the state (which never asked)
    old = SchedulerState()
    old.handle(joined(W1))
    old.durations["slow"] = 0.01
    old.handle(graph(task("slow-1"), task("slow-2"), task("slow-3")))
    new, _ = restarted(old, [W1])

    out = new.handle(StealResponse(sid(), LATER, W1, "slow-3", True))

    assert [(i.worker, i.key) for i in out if isinstance(i, Compute)] == [(W1, "slow-3")]
    assert new.tasks["slow-3"].processing_on == W1
    new.validate_state()


def test_refused_steal_for_a_request_of_the_previous_scheduler_changes_nothing():
    old = SchedulerState()
    old.handle(joined(W1))
    old.durations["slow"] = 0.01
    old.handle(graph(task("slow-1"), task("slow-2")))
    new, _ = restarted(old, [W1])

    out = new.handle(StealResponse(sid(), LATER, W1, "slow-2", False))

    assert [i for i in out if isinstance(i, Compute)] == []
    new.validate_state()
