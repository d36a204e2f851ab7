"""What goes wrong, and how the scheduler recovers: workers lost, data lost, tasks that
raise (retries, ``client.retry``), tasks that kill their workers (``KilledWorker``), and
``client.restart()``.

Lost work is rescheduled and lost results are recomputed from lineage when still needed --
all through the ordinary transitions, so the state after a failure is one the table can
reach.
"""

from __future__ import annotations

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler import placement, transitions
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import (
    NOTHING,
    TS,
    Task,
    WorkerInfo,
    drop_name,
    grown,
    notifiable,
)

# -- workers ----------------------------------------------------------------------------------


def on_worker_left(s: Scheduling, e: ev.WorkerLeft) -> None:
    ws = s.workers.pop(e.address, None)
    if ws is None:
        return
    s.emit(ev.LogEvent("worker-lost" if e.lost else "worker-left", {"worker": e.address}))
    suspects = likely_running(ws, s.tasks) if e.lost else set()
    for key in list(ws.processing):
        ts = s.tasks.get(key)
        if ts is None or ts.processing_on != e.address:
            continue  # moved already (a co-assigned task whose input was released)
        if key in suspects:
            ts.suspicious += 1
            if ts.suspicious >= s.allowed_failures:
                _killed_worker(s, ts, e.address)
                continue
        _rerun(s, ts)
    for key in list(ws.has_what):
        ts = s.tasks[key]
        ts.who_has = drop_name(ts.who_has, e.address)
        s.mark(ts)  # the stored record's who_has must not name the departed worker
        if ts.state is TS.MEMORY and not ts.who_has and not ts.in_redis:
            _data_lost(s, ts)
    for ts in list(s.tasks.values()):
        if ts.state is TS.QUEUED and ts.restrictions and not placement.candidates(s, ts):
            s.transition(ts, TS.NO_WORKER)


def on_rescheduled(s: Scheduling, e: ev.TaskRescheduled) -> None:
    """The task raised ``Reschedule``: as dask, back to released and placed anew (no
    failure counted); a stale report (moved or released meanwhile) changes nothing."""
    ts = s.tasks.get(e.key)
    if ts is None or ts.state is not TS.PROCESSING or ts.processing_on != e.worker:
        return
    _rerun(s, ts)


def likely_running(ws: WorkerInfo, tasks: dict[str, Task]) -> set[str]:
    """The tasks a dead worker was probably running: its seceded ones and, of the others,
    as many as it has threads, highest priority first (it runs them in that order). Only
    these become suspects: a worker holds many more quick tasks than it runs at once, and
    blaming all of them would err innocent tasks with KilledWorker."""
    waiting = sorted(
        (k for k in ws.processing if k not in ws.long_running), key=lambda k: tasks[k].priority
    )
    return set(waiting[: ws.nthreads]) | ws.long_running


def _rerun(s: Scheduling, ts: Task) -> None:
    """Back to released, and waiting again if still needed (a cascade may have moved it)."""
    s.transition(ts, TS.RELEASED)
    if ts.state is TS.RELEASED and s.needed(ts):
        s.transition(ts, TS.WAITING)


def _killed_worker(s: Scheduling, ts: Task, last_worker: str) -> None:
    text = (
        f"Attempted to run task {ts.key!r} on {ts.suspicious} different workers, but all "
        f"those workers died while running it. The last worker was {last_worker}."
    )
    ts.error_kind = wire.KILLED_WORKER
    transitions.fail(s, ts, None, ts.key, text)


# -- data -----------------------------------------------------------------------------------


def _data_lost(s: Scheduling, ts: Task) -> None:
    """The only copy of a result is gone: recompute it if anything still needs it."""
    for client in sorted(ts.who_wants):
        if notifiable(client):  # their futures go back to pending, not to error
            s.emit(ev.Notify(client, wire.KeyLost(ts.key)))
    s.transition(ts, TS.RELEASED)
    if s.needed(ts):
        s.transition(ts, TS.WAITING)
    for d in ts.dependents:
        dts = s.tasks.get(d)
        if dts is not None and dts.state in (TS.WAITING, TS.QUEUED, TS.NO_WORKER):
            # straight back to waiting: releasing it would free its other inputs too
            s.transition(dts, TS.WAITING)
            dts.waiting_on = grown(dts.waiting_on, ts.key)


def on_missing_data(s: Scheduling, e: ev.MissingData) -> None:
    """Holders that could not deliver are struck off; data nobody holds is recomputed, and
    the task that needed it waits again instead of failing."""
    for dep_key in e.deps:
        dep = s.tasks.get(dep_key)
        if dep is None or dep.state is not TS.MEMORY:
            continue
        for address in e.tried:
            dep.who_has = drop_name(dep.who_has, address)
            ws = s.workers.get(address)
            if ws is not None:
                ws.has_what.discard(dep_key)
        s.mark(dep)
        if not dep.who_has and not dep.in_redis:
            _data_lost(s, dep)
    ts = s.tasks.get(e.key)
    if ts is not None and ts.state is TS.PROCESSING and ts.processing_on == e.worker:
        s.transition(ts, TS.RELEASED)
        if s.needed(ts):
            s.transition(ts, TS.WAITING)


# -- tasks that raise -------------------------------------------------------------------------


def on_erred(s: Scheduling, e: ev.TaskErred) -> None:
    ts = s.tasks.get(e.key)
    if ts is None:
        s.emit(ev.DropResult(e.key))  # forgotten while it ran: its error stored after that
        return
    if ts.state is not TS.PROCESSING or ts.processing_on != e.worker:
        return
    if ts.retries > 0:
        ts.retries -= 1
        s.transition(ts, TS.RELEASED)
        if s.needed(ts):
            s.transition(ts, TS.WAITING)
        return
    transitions.fail(s, ts, e.error, ts.key, None)


def on_retry(s: Scheduling, e: ev.RetryRequested) -> None:
    roots = [s.tasks[k] for k in e.keys if k in s.tasks]
    lineage = _erred_lineage(s, roots)
    for ts in lineage:
        s.transition(ts, TS.RELEASED)
    for ts in lineage:
        if ts.state is TS.RELEASED and s.needed(ts):
            s.transition(ts, TS.WAITING)


def _erred_lineage(s: Scheduling, roots: list[Task]) -> list[Task]:
    """Erred tasks among ``roots`` and, through their dependencies, the task that failed
    first -- in priority order, so they run again in the order they ran."""
    out: dict[str, Task] = {}
    for ts in roots:
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state is not TS.ERRED or t.key in out:
                continue
            out[t.key] = t
            stack.extend(s.tasks[d] for d in t.dependencies if d in s.tasks)
    return sorted(out.values(), key=lambda t: t.priority)


# -- restart ----------------------------------------------------------------------------------


def on_restart(s: Scheduling, e: ev.RestartRequested) -> None:
    """Every task is cancelled and forgotten; workers restart with nothing.

    Through the table like any release: nobody wants anything any more, and the tasks are
    released dependents first, so each finds nothing left that needs it and is forgotten
    (a dependency released before its dependents could be woken again by them)."""
    for ts in s.tasks.values():
        for client in sorted(ts.who_wants):
            if notifiable(client):
                s.emit(ev.Notify(client, wire.KeyCancelled(ts.key)))
        ts.who_wants = NOTHING
    for wanted in s.clients.values():
        wanted.clear()
    s.stealing.clear()
    for ts in _dependents_first(s.tasks):
        if ts.key in s.tasks:
            s.release_if_unneeded(ts)
    s.queued.clear()
    for ws in s.workers.values():
        ws.occupancy = 0.0
        ws.used_resources.clear()
    s.emit(ev.LogEvent("restart", {"client": e.client}))
    s.emit(ev.RestartWorkers(sorted(s.workers), e.client))


def _dependents_first(tasks: dict[str, Task]) -> list[Task]:
    """Every task after all of its dependents (Kahn's order over the dependents)."""
    pending = {key: sum(d in tasks for d in ts.dependents) for key, ts in tasks.items()}
    order = [ts for key, ts in tasks.items() if not pending[key]]
    for ts in order:  # (grows as we go)
        for dep_key in ts.dependencies:
            if dep_key in pending:
                pending[dep_key] -= 1
                if not pending[dep_key]:
                    order.append(tasks[dep_key])
    return order
