"""Every change of a task's state, in one table: ``(start, finish)`` -> the function making it.

:meth:`~rdist.scheduler.interface.Scheduling.transition` looks the pair up (a pair not in
:data:`TRANSITIONS` raises ``InvalidTransition``), records it in the transition log and
calls the function, which does the bookkeeping of that one change. Nothing else assigns
``Task.state``. A function may cause further transitions -- of other tasks, or of the
same task onwards -- always through the table again, so the log of a task replays its
whole life pair by pair.

Pairs used by one caller only say so: ``processing -> processing`` is a confirmed steal
(or a repeat after a predecessor's steal); ``released -> processing / erred`` and the
``restored`` variant of ``released -> memory`` put a task where a previous scheduler's
record says it was (:mod:`~rdist.scheduler.recovery`); they take keyword arguments no
other caller passes, so a stray call fails loudly instead of skipping the bookkeeping.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from rdist.protocol import wire
from rdist.scheduler import coassign, functions, placement
from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import (
    FIRE_AND_FORGET,
    NOTHING,
    TS,
    Task,
    WorkerInfo,
    add_name,
    discard,
    grown,
    notifiable,
)

# -- released -> waiting: inputs are looked for ---------------------------------------------


def released_waiting(s: Scheduling, ts: Task) -> None:
    ts.state = TS.WAITING
    ts.waiting_on = NOTHING
    if ts.broken is not None:
        fail(s, ts, None, ts.key, ts.broken)
        return
    for dep_key in ts.dependencies:
        dep = s.tasks[dep_key]
        dep.waiters = grown(dep.waiters, ts.key)
        if dep.state is TS.ERRED:
            ts.error_kind = dep.error_kind
            fail(s, ts, dep.error, dep.blame, dep.error_text)
            return
        if dep.state is not TS.MEMORY:
            ts.waiting_on = grown(ts.waiting_on, dep_key)
            if dep.state is TS.RELEASED:
                s.waking.push(dep.priority, dep_key)
    if not ts.waiting_on:
        placement.ready(s, ts)
    elif s.coassign:
        coassign.waiting(s, ts)
    if s.waking.heap:
        s.waking.drain(lambda key: _wake(s, key))


def _wake(s: Scheduling, key: str) -> None:
    """Released inputs go to waiting in a loop, highest priority first, so that a long
    chain is not walked by recursion."""
    dep = s.tasks.get(key)
    if dep is not None and dep.state is TS.RELEASED and s.needed(dep):
        s.transition(dep, TS.WAITING)


# -- ready: queued, no-worker, back to waiting --------------------------------------------


def to_queued(s: Scheduling, ts: Task) -> None:
    s.no_worker.discard(ts.key)
    ts.state = TS.QUEUED
    if ts.restrictions or ts.resources:
        s.queued_restricted.add(ts.key)
    else:
        heapq.heappush(s.queued, (ts.priority, ts.key))


def ready_to_waiting(s: Scheduling, ts: Task) -> None:
    """An input of a ready task was lost: wait again, keeping the inputs still held."""
    s.queued_restricted.discard(ts.key)  # heap entries are skipped lazily
    s.no_worker.discard(ts.key)
    ts.state = TS.WAITING
    ts.waiting_on = {k for k in ts.dependencies if s.tasks[k].state is not TS.MEMORY} or NOTHING


def to_no_worker(s: Scheduling, ts: Task) -> None:
    s.queued_restricted.discard(ts.key)
    ts.state = TS.NO_WORKER
    s.no_worker.add(ts.key)


# -- processing -----------------------------------------------------------------------------


def to_processing(s: Scheduling, ts: Task, worker: WorkerInfo) -> None:
    s.queued_restricted.discard(ts.key)
    s.no_worker.discard(ts.key)
    ts.state = TS.PROCESSING
    _assign(s, ts, worker)
    deps = {}
    for dep_key in ts.dependencies:
        dep = s.tasks[dep_key]
        deps[dep_key] = wire.DepInfo(sorted(dep.who_has), dep.nbytes, dep.in_redis)
    wants = ts.who_wants
    if s.direct_notify and wants:
        if len(wants) == 1:  # the common case, without a generator
            (client,) = wants
            ts.notified = (client,) if notifiable(client) else ()
        else:
            ts.notified = tuple(c for c in wants if notifiable(c))
    s.emit(
        ev.Compute(
            worker.address, ts.key, ts.priority, deps, ts.resources, list(ts.notified), ts.spec
        )
    )
    ts.spec = None
    if ts.dependents and s.coassign:
        coassign.dependents(s, ts, worker)


def _assign(s: Scheduling, ts: Task, worker: WorkerInfo) -> None:
    ts.processing_on = worker.address
    ts.processing_since = s.now
    worker.processing.add(ts.key)
    ts.occupancy = placement.estimate(s, ts)
    worker.occupancy += ts.occupancy
    for name, amount in (ts.resources or {}).items():
        worker.used_resources[name] = worker.used_resources.get(name, 0) + amount


def move_processing(s: Scheduling, ts: Task, worker: WorkerInfo) -> None:
    """``processing -> processing``: a confirmed steal (the victim dropped ``ts`` unstarted)
    assigns it to ``worker`` -- or to its own worker again (see ``stealing``)."""
    stop_processing(s, ts)
    to_processing(s, ts, worker)


def stop_processing(s: Scheduling, ts: Task) -> WorkerInfo | None:
    """Undo the assignment's bookkeeping (not a transition: its callers make one)."""
    ws = s.workers.get(ts.processing_on or "")
    ts.processing_on = None
    ts.notified = ()
    if s.stealing:
        s.stealing.pop(ts.key, None)
    if ws is not None and ts.key in ws.processing:
        ws.processing.discard(ts.key)
        ws.long_running.discard(ts.key)
        ws.occupancy = max(0.0, ws.occupancy - ts.occupancy) if ws.processing else 0.0
        for name, amount in (ts.resources or {}).items():
            ws.used_resources[name] = ws.used_resources.get(name, 0) - amount
    return ws


# -- memory ---------------------------------------------------------------------------------


def processing_memory(s: Scheduling, ts: Task, worker: str, inline: bytes | None = None) -> None:
    told = ts.notified  # the worker notified these clients itself
    ts.waiting_on = NOTHING  # co-assigned, finished before its input's report arrived
    stop_processing(s, ts)
    ts.state = TS.MEMORY
    ws = s.workers.get(worker)
    if ws is not None:
        ts.who_has = add_name(ts.who_has, worker)
        ws.has_what.add(ts.key)
    _after_memory(s, ts, inline, told)


def released_memory(s: Scheduling, ts: Task, restored: bool = False) -> None:
    """Data arrived from outside (scatter) rather than from running the task -- or, when
    ``restored``, a previous scheduler's record says it is held: nobody is told, nothing
    wakes (the restore does both once every task is back)."""
    ts.state = TS.MEMORY
    if not restored:
        _after_memory(s, ts, None)


def _after_memory(
    s: Scheduling, ts: Task, inline: bytes | None, told: tuple[str, ...] = ()
) -> None:
    for client in list(ts.who_wants):
        if client == FIRE_AND_FORGET:
            s.unwant(FIRE_AND_FORGET, [ts.key])
        elif client not in told:
            s.notify(client, ts, inline)
    for dep_key in ts.dependents:
        dts = s.tasks.get(dep_key)
        if dts is None:
            continue
        if dts.state is TS.PROCESSING:  # co-assigned: it waited for us on our worker
            discard(dts.waiting_on, ts.key)
            continue
        if dts.state is not TS.WAITING:
            continue
        discard(dts.waiting_on, ts.key)
        if not dts.waiting_on:
            placement.ready(s, dts)
    for dep_key in ts.dependencies:
        dep = s.tasks.get(dep_key)
        if dep is not None:
            discard(dep.waiters, ts.key)
            s.release_if_unneeded(dep)
    if ts.state is TS.MEMORY:
        s.release_if_unneeded(ts)


# -- erred ----------------------------------------------------------------------------------


def fail(
    s: Scheduling, ts: Task, error: bytes | None, blame: str | None, error_text: str | None
) -> None:
    """``ts`` errs with this failure (and so do its dependents still waiting for it)."""
    ts.error, ts.blame, ts.error_text = error, blame, error_text
    s.transition(ts, TS.ERRED)


def _waits_for_failed_input(ts: Task) -> bool:
    return ts.state in (TS.WAITING, TS.QUEUED, TS.NO_WORKER) or (
        ts.state is TS.PROCESSING and bool(ts.waiting_on)  # co-assigned
    )


def to_erred(s: Scheduling, ts: Task, cascade: bool = True) -> None:
    """Mark ``ts`` erred; every dependent still waiting errs with the same failure, each
    through the table (``cascade=False``: one step of that walk, done in a loop here
    rather than by recursion, so a chain of any length errs in one frame)."""
    if not cascade:
        _enter_erred(s, ts)
        return
    # copied first: ``ts`` itself may be released (clearing its error) while we go
    failure = ts.error, ts.blame, ts.error_text, ts.error_kind
    _enter_erred(s, ts)
    stack = [d for k in ts.dependents if (d := s.tasks.get(k)) is not None]
    while stack:
        t = stack.pop()
        if not _waits_for_failed_input(t):
            continue
        t.error, t.blame, t.error_text, t.error_kind = failure
        s.transition(t, TS.ERRED, cascade=False)
        stack.extend(d for k in t.dependents if (d := s.tasks.get(k)) is not None)


def _enter_erred(s: Scheduling, ts: Task) -> None:
    if ts.state is TS.PROCESSING:
        worker, coassigned = ts.processing_on, bool(ts.waiting_on)
        stop_processing(s, ts)
        if coassigned and worker in s.workers:  # it waits there for data never coming
            s.emit(ev.FreeKeys(worker, [ts.key]))
    s.queued_restricted.discard(ts.key)
    s.no_worker.discard(ts.key)
    ts.state = TS.ERRED
    ts.waiting_on = NOTHING
    s.mark(ts)
    for client in list(ts.who_wants):
        if client == FIRE_AND_FORGET:
            s.unwant(FIRE_AND_FORGET, [ts.key])
        else:
            s.notify(client, ts)
    for dep_key in ts.dependencies:
        dep = s.tasks.get(dep_key)
        if dep is not None:
            discard(dep.waiters, ts.key)
            s.release_if_unneeded(dep)


# -- released and forgotten -----------------------------------------------------------------


def to_released(s: Scheduling, ts: Task) -> None:
    start = ts.state
    if start is TS.PROCESSING:
        worker = ts.processing_on
        stop_processing(s, ts)
        if worker in s.workers:
            s.emit(ev.FreeKeys(worker, [ts.key]))
    elif start is TS.MEMORY:
        free_data(s, ts)
    elif start is TS.QUEUED:
        s.queued_restricted.discard(ts.key)  # heap entries are skipped lazily
    elif start is TS.NO_WORKER:
        s.no_worker.discard(ts.key)
    ts.state = TS.RELEASED
    ts.error = ts.blame = ts.error_text = ts.error_kind = None
    for dep_key in ts.dependencies:
        dep = s.tasks.get(dep_key)
        if dep is not None:
            discard(dep.waiters, ts.key)
    for dep_key in ts.dependencies:
        dep = s.tasks.get(dep_key)
        if dep is not None and dep.state is not TS.RELEASED:
            s.release_if_unneeded(dep)
    ts.waiting_on = NOTHING
    if start is TS.PROCESSING and ts.dependents:
        coassign.undo(s, ts)


def free_data(s: Scheduling, ts: Task) -> None:
    """Every copy of the result goes: workers free it, Redis drops it."""
    for address in sorted(ts.who_has):
        ws = s.workers.get(address)
        if ws is not None:
            ws.has_what.discard(ts.key)
            s.emit(ev.FreeKeys(address, [ts.key]))
    ts.who_has = NOTHING
    if ts.in_redis:
        s.emit(ev.DropResult(ts.key))
        ts.in_redis = False


def released_forgotten(s: Scheduling, ts: Task) -> None:
    ts.state = TS.FORGOTTEN
    del s.tasks[ts.key]
    s.emit(ev.ForgetTask(ts.key))
    if ts.func is not None:
        functions.unname(s, ts)
    for dep_key in ts.dependencies:
        dep = s.tasks.get(dep_key)
        if dep is not None:
            discard(dep.dependents, ts.key)
            s.forget_if_unreferenced(dep)  # queued: we are inside its loop


# -- restored from a previous scheduler's records ------------------------------------------


def restored_processing(s: Scheduling, ts: Task, running_on: WorkerInfo) -> None:
    """``released -> processing`` (restore only): ``ts`` runs on ``running_on`` already;
    the worker will report it, so nothing is sent."""
    ts.state = TS.PROCESSING
    _assign(s, ts, running_on)


def restored_erred(
    s: Scheduling,
    ts: Task,
    error: bytes | None,
    blame: str | None,
    error_text: str | None,
    error_kind: str | None,
) -> None:
    """``released -> erred`` (restore only): the failure as stored; clients knew already."""
    ts.state = TS.ERRED
    ts.error, ts.blame, ts.error_text, ts.error_kind = error, blame, error_text, error_kind


Transition = Callable[..., None]

#: Every legal change of a task's state. Reading down a column of starts: a task is
#: released (known, not running), waits for inputs, is ready (queued, or no worker may
#: run it), is processing on a worker, and ends in memory or erred; released again when
#: nothing needs it, and forgotten when nothing refers to it either.
TRANSITIONS: dict[tuple[TS, TS], Transition] = {
    (TS.RELEASED, TS.WAITING): released_waiting,
    (TS.RELEASED, TS.MEMORY): released_memory,
    (TS.RELEASED, TS.FORGOTTEN): released_forgotten,
    (TS.RELEASED, TS.PROCESSING): restored_processing,
    (TS.RELEASED, TS.ERRED): restored_erred,
    (TS.WAITING, TS.PROCESSING): to_processing,
    (TS.WAITING, TS.QUEUED): to_queued,
    (TS.WAITING, TS.NO_WORKER): to_no_worker,
    (TS.WAITING, TS.RELEASED): to_released,
    (TS.WAITING, TS.ERRED): to_erred,
    (TS.QUEUED, TS.PROCESSING): to_processing,
    (TS.QUEUED, TS.NO_WORKER): to_no_worker,
    (TS.QUEUED, TS.WAITING): ready_to_waiting,
    (TS.QUEUED, TS.RELEASED): to_released,
    (TS.QUEUED, TS.ERRED): to_erred,
    (TS.NO_WORKER, TS.QUEUED): to_queued,
    (TS.NO_WORKER, TS.PROCESSING): to_processing,
    (TS.NO_WORKER, TS.WAITING): ready_to_waiting,
    (TS.NO_WORKER, TS.RELEASED): to_released,
    (TS.NO_WORKER, TS.ERRED): to_erred,
    (TS.PROCESSING, TS.PROCESSING): move_processing,
    (TS.PROCESSING, TS.MEMORY): processing_memory,
    (TS.PROCESSING, TS.RELEASED): to_released,
    (TS.PROCESSING, TS.ERRED): to_erred,
    (TS.MEMORY, TS.RELEASED): to_released,
    (TS.ERRED, TS.RELEASED): to_released,
}
