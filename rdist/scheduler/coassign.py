"""Co-assignment: a task whose missing inputs are all being computed on one worker goes
to that worker at once, before they finish.

The worker runs it as soon as its inputs are computed there, so a chain (or any task that
only extends work already on one worker) runs at the worker's own speed, with no round
trip through the scheduler between links. The worker is told which inputs to wait for
rather than fetch (holders ``[]``). Safety rules, so nothing waits for data never coming:

- only inputs that cannot move: no retries left to run elsewhere, not seceded, no steal
  pending; tasks with co-assigned dependents are never stolen;
- an input that stops processing without a result sends its co-assigned dependents back
  to waiting at the scheduler (:func:`undo`); one that errs errs them and frees them on the
  worker (``transitions.to_erred``).

Functions over the state's internal interface (its transitions do the bookkeeping).
"""

from __future__ import annotations

from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import MAX_IN_FLIGHT_PER_THREAD, TS, Task, WorkerInfo


def allowed(s: Scheduling, ts: Task, ws: WorkerInfo) -> bool:
    if ts.restrictions or ts.resources or ts.broken is not None or not ts.waiting_on:
        return False
    if ws.status == "closing":  # retiring (client.retire_workers): nothing new goes there
        return False
    if len(ws.processing) >= ws.nthreads * MAX_IN_FLIGHT_PER_THREAD:
        return False
    for key in ts.waiting_on:
        dep = s.tasks[key]
        if (
            dep.state is not TS.PROCESSING
            or dep.processing_on != ws.address
            or dep.retries
            or key in ws.long_running
            or key in s.stealing
        ):
            return False
    return True


def waiting(s: Scheduling, ts: Task) -> None:
    """``ts`` just started waiting: co-assign it if its inputs are all on one worker."""
    dep = s.tasks[next(iter(ts.waiting_on))]
    ws = s.workers.get(dep.processing_on or "")
    if ws is not None and allowed(s, ts, ws):
        s.transition(ts, TS.PROCESSING, worker=ws)


def dependents(s: Scheduling, ts: Task, ws: WorkerInfo) -> None:
    """``ts`` was assigned to ``ws``: its waiting dependents that may follow it go too --
    iteratively, so a chain of a million is not walked by recursion."""

    def follow(t: Task) -> None:
        for key in t.dependents:
            d = s.tasks.get(key)
            if d is not None and d.state is TS.WAITING and allowed(s, d, ws):
                s.transition(d, TS.PROCESSING, worker=ws)

    s.coassigning.run(ts, follow)


def undo(s: Scheduling, ts: Task) -> None:
    """``ts`` stopped processing without a result: dependents co-assigned to wait for it
    on its worker wait at the scheduler again."""
    for key in list(ts.dependents):
        d = s.tasks.get(key)
        if d is not None and d.state is TS.PROCESSING and ts.key in d.waiting_on:
            s.transition(d, TS.RELEASED)
            if _still_released(d) and s.needed(d):  # (the cascade may have moved it already)
                s.transition(d, TS.WAITING)


def _still_released(ts: Task) -> bool:
    """(A function, so that mypy does not assume ``ts.state`` kept its narrowed value
    across the transition above.)"""
    return ts.state is TS.RELEASED
