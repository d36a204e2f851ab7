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
  worker (``SchedulerState._enter_erred``).

Pure functions over a ``SchedulerState`` (its transitions do the bookkeeping).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rdist.scheduler.state import SchedulerState, Task, WorkerInfo


def allowed(state: SchedulerState, ts: Task, ws: WorkerInfo) -> bool:
    from rdist.scheduler.state import MAX_IN_FLIGHT_PER_THREAD, TS

    if ts.restrictions or ts.resources or ts.broken is not None or not ts.waiting_on:
        return False
    if len(ws.processing) >= ws.nthreads * MAX_IN_FLIGHT_PER_THREAD:
        return False
    for key in ts.waiting_on:
        dep = state.tasks[key]
        if (
            dep.state is not TS.PROCESSING
            or dep.processing_on != ws.address
            or dep.retries
            or key in ws.long_running
            or key in state.stealing
        ):
            return False
    return True


def waiting(state: SchedulerState, ts: Task) -> None:
    """``ts`` just started waiting: co-assign it if its inputs are all on one worker."""
    from rdist.scheduler.state import TS

    dep = state.tasks[next(iter(ts.waiting_on))]
    ws = state.workers.get(dep.processing_on or "")
    if ws is not None and allowed(state, ts, ws):
        state._transition(ts, TS.PROCESSING, worker=ws)


def dependents(state: SchedulerState, ts: Task, ws: WorkerInfo) -> None:
    """``ts`` was assigned to ``ws``: its waiting dependents that may follow it go too --
    iteratively, so a chain of a million is not walked by recursion."""
    from rdist.scheduler.state import TS

    def follow(t: Task) -> None:
        for key in t.dependents:
            d = state.tasks.get(key)
            if d is not None and d.state is TS.WAITING and allowed(state, d, ws):
                state._transition(d, TS.PROCESSING, worker=ws)

    state.coassigning.run(ts, follow)


def undo(state: SchedulerState, ts: Task) -> None:
    """``ts`` stopped processing without a result: dependents co-assigned to wait for it
    on its worker wait at the scheduler again."""
    from rdist.scheduler.state import TS

    for key in list(ts.dependents):
        d = state.tasks.get(key)
        if d is not None and d.state is TS.PROCESSING and ts.key in d.waiting_on:
            state._transition(d, TS.RELEASED)
            moved_on = d.state is not TS.RELEASED  # type: ignore[comparison-overlap]
            if not moved_on and state._needed(d):  # (the cascade may have moved it already)
                state._transition(d, TS.WAITING)
