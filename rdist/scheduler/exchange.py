"""Restarting a group of tasks on a worker's request: a P2P exchange (``rdist.shuffle``)
that lost a worker runs all its transfers and its barrier again.

Unlike a lost result (recomputed because nobody holds it), these tasks may be in memory
on live workers -- their results are stale, not gone -- so each is released (its copies
freed) whatever its state, and waits to run again when still needed; dependents waiting
for them wait for them again. A dependent already running carries on: it either finishes
with data that was complete, or notices the loss itself and is rescheduled.
"""

from __future__ import annotations

from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import TS

_RESTARTABLE = (TS.MEMORY, TS.PROCESSING, TS.ERRED)
_WAITING = (TS.WAITING, TS.QUEUED, TS.NO_WORKER)


def on_tasks_restarted(s: Scheduling, e: ev.TasksRestarted) -> None:
    tasks = [ts for k in e.keys if (ts := s.tasks.get(k)) is not None]
    for ts in tasks:
        if ts.state in _RESTARTABLE:
            s.transition(ts, TS.RELEASED)
    for ts in tasks:
        if ts.state is TS.RELEASED and s.needed(ts):
            s.transition(ts, TS.WAITING)
    for ts in tasks:
        if ts.state is TS.MEMORY:
            continue
        for d in ts.dependents:
            dts = s.tasks.get(d)
            if dts is not None and dts.state in _WAITING:
                s.transition(dts, TS.WAITING)  # straight back: its other inputs stay
                dts.waiting_on.add(ts.key)
