"""Where a ready task runs, and when: data locality, room on workers, the scheduler's queue.

A worker takes a bounded amount of work -- a task per thread, plus a little estimated work
beyond -- and the rest waits in ``queued`` at the scheduler, highest priority first, so
that a worker joining (or freeing up) gets the most urgent work and stealing stays cheap.
A task runs where most of its input bytes are, when that worker has room (or the inputs
are too big to move); restrictions and resources narrow the candidates.

A root task (no inputs) has no bytes to be near, but its *siblings* -- the other inputs of
its dependents -- may already run somewhere: it goes there too when that worker has room or
is at most one soft target beyond it (``near_room``), so that the dependent finds all its
inputs on one worker. In ``(x + x.T)`` the chunks ``x[i, j]`` and ``x[j, i]`` (dask's order
puts them side by side) then meet on one worker and no chunk crosses to another; the bound
keeps a graph whose roots are all linked in a row (a sliding window) from piling onto one
worker: blocks of adjacent roots fill one worker, then the next.
"""

from __future__ import annotations

import heapq

from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import (
    DEFAULT_DURATION,
    LOCALITY_BYTES,
    MAX_IN_FLIGHT_PER_THREAD,
    TARGET_SECONDS_PER_THREAD,
    TS,
    Task,
    WorkerInfo,
    load,
)


def candidates(s: Scheduling, ts: Task) -> list[WorkerInfo]:
    """The workers allowed to run ``ts``: enough resources, and its restrictions (merely a
    preference when ``loose`` and none of them is here)."""
    workers = list(s.workers.values())
    if ts.resources:
        workers = [
            w for w in workers if all(w.resources.get(r, 0) >= n for r, n in ts.resources.items())
        ]
    if ts.restrictions:
        allowed = [w for w in workers if w.address in ts.restrictions or w.name in ts.restrictions]
        if allowed or not ts.loose:
            return allowed
    return workers


def estimate(s: Scheduling, ts: Task) -> float:
    """Expected duration of ``ts``: the average of its prefix so far."""
    return s.durations.get(ts.prefix, DEFAULT_DURATION)


def learn_duration(s: Scheduling, prefix: str, duration: float) -> None:
    """Fold a measured ``duration`` into the average of tasks of ``prefix`` (``key_prefix``)."""
    old = s.durations.get(prefix)
    s.durations[prefix] = duration if old is None else 0.8 * old + 0.2 * duration


def resources_free(ws: WorkerInfo, ts: Task) -> bool:
    for name, amount in (ts.resources or {}).items():
        if ws.used_resources.get(name, 0) + amount > ws.resources.get(name, 0):
            return False
    return True


def has_room(s: Scheduling, ws: WorkerInfo, ts: Task) -> bool:
    """``ws`` may take ``ts`` now: running, resources free, a thread or a little work free."""
    if ws.status != "running":
        return False
    if ts.resources and not resources_free(ws, ts):
        return False
    n = len(ws.processing) - len(ws.long_running)
    if n < ws.nthreads:
        return True
    if n >= ws.nthreads * MAX_IN_FLIGHT_PER_THREAD:
        return False
    return ws.occupancy + estimate(s, ts) <= ws.nthreads * TARGET_SECONDS_PER_THREAD


#: Sibling placement looks only at dependents with at most this many inputs (a reduction
#: over a thousand roots ties none of them to the others) ...
SIBLING_FANIN = 8
#: ... and at no more than this many dependents of the root (a bounded cost per placement).
SIBLING_DEPENDENTS = 8


def near_room(s: Scheduling, ws: WorkerInfo, ts: Task) -> bool:
    """``ws`` may take ``ts`` to keep it beside its siblings: running, resources free, and
    at most twice what :func:`has_room` allows (a thread's worth of tasks more, or one
    more soft target of estimated work), never past the hard cap."""
    if ws.status != "running":
        return False
    if ts.resources and not resources_free(ws, ts):
        return False
    n = len(ws.processing) - len(ws.long_running)
    if n < 2 * ws.nthreads:
        return True
    if n >= ws.nthreads * MAX_IN_FLIGHT_PER_THREAD:
        return False
    return ws.occupancy + estimate(s, ts) <= 2 * ws.nthreads * TARGET_SECONDS_PER_THREAD


def sibling_worker(s: Scheduling, ts: Task) -> str | None:
    """The address computing or holding most siblings of ``ts`` (other inputs of its
    dependents with at most :data:`SIBLING_FANIN` inputs); None when none is placed."""
    votes: dict[str, int] = {}
    for seen, key in enumerate(ts.dependents):
        if seen >= SIBLING_DEPENDENTS:
            break
        dependent = s.tasks.get(key)
        if dependent is None or len(dependent.dependencies) > SIBLING_FANIN:
            continue
        for sibling_key in dependent.dependencies:
            sibling = s.tasks.get(sibling_key)
            if sibling is None or sibling is ts:
                continue
            if sibling.state is TS.PROCESSING and sibling.processing_on is not None:
                votes[sibling.processing_on] = votes.get(sibling.processing_on, 0) + 1
            elif sibling.state is TS.MEMORY:
                for address in sibling.who_has:
                    votes[address] = votes.get(address, 0) + 1
    if not votes:
        return None
    return max(votes, key=lambda address: (votes[address], address))


def beside_siblings(
    s: Scheduling, ts: Task, workers: list[WorkerInfo] | None = None
) -> WorkerInfo | None:
    """For a root task with placed siblings: their worker, if among ``workers`` (any
    when None) and near room."""
    if ts.dependencies or not ts.dependents:
        return None
    address = sibling_worker(s, ts)
    if address is None:
        return None
    ws = s.workers.get(address)
    if ws is None or (workers is not None and ws not in workers):
        return None
    return ws if near_room(s, ws, ts) else None


def decide_worker(s: Scheduling, ts: Task, workers: list[WorkerInfo]) -> WorkerInfo | None:
    """The candidate holding most input bytes (for a root: its siblings' worker), then the
    least loaded; None to queue."""
    if ts.dependents and not ts.dependencies:
        near = beside_siblings(s, ts, workers)
        if near is not None:
            return near
    if ts.dependencies:
        local: dict[str, int] = {}
        for dep_key in ts.dependencies:
            dep = s.tasks[dep_key]
            for address in dep.who_has:
                local[address] = local.get(address, 0) + dep.nbytes
        best = max(workers, key=lambda w: (local.get(w.address, 0), -load(w)))
        if (
            local.get(best.address, 0) >= LOCALITY_BYTES
            and not ts.resources
            and best.status == "running"
        ):
            return best
        if has_room(s, best, ts):
            return best
    roomy = [w for w in workers if has_room(s, w, ts)]
    if not roomy:
        return None
    return min(roomy, key=load)


def ready(s: Scheduling, ts: Task) -> None:
    """All inputs of ``ts`` are in memory: run it now, queue it, or wait for a worker."""
    if s.queued and s.workers and not (ts.dependencies or ts.restrictions or ts.resources):
        # others already wait for room: join them (the fill at the end of this batch
        # places the highest priorities first) instead of asking every worker again
        s.transition(ts, TS.QUEUED)
        return
    allowed = candidates(s, ts)
    if not allowed:
        s.transition(ts, TS.NO_WORKER)
        return
    ws = decide_worker(s, ts, allowed)
    if ws is not None:
        s.transition(ts, TS.PROCESSING, worker=ws)
    else:
        s.transition(ts, TS.QUEUED)


def fill_all_workers(s: Scheduling) -> None:
    """Hand queued tasks to workers with room, highest priority first."""
    if not s.workers or not (s.queued or s.queued_restricted):
        return
    if s.queued_restricted:
        for key in sorted(s.queued_restricted, key=lambda k: s.tasks[k].priority):
            ts = s.tasks[key]
            roomy = [w for w in candidates(s, ts) if has_room(s, w, ts)]
            if roomy:
                s.transition(ts, TS.PROCESSING, worker=min(roomy, key=load))
    while s.queued:
        priority, key = s.queued[0]
        head = s.tasks.get(key)
        if head is None or head.state is not TS.QUEUED or head.priority != priority:
            heapq.heappop(s.queued)  # a stale entry
            continue
        near = beside_siblings(s, head) if head.dependents else None
        if near is not None:
            heapq.heappop(s.queued)
            s.transition(head, TS.PROCESSING, worker=near)
            continue
        roomy = [w for w in s.workers.values() if has_room(s, w, head)]
        if not roomy:
            return
        heapq.heappop(s.queued)
        s.transition(head, TS.PROCESSING, worker=min(roomy, key=load))


def has_queued_work(s: Scheduling) -> bool:
    """Tasks wait at the scheduler (those go to idle workers before any steal)."""
    while s.queued:
        priority, key = s.queued[0]
        ts = s.tasks.get(key)
        if ts is not None and ts.state is TS.QUEUED and ts.priority == priority:
            return True
        heapq.heappop(s.queued)
    return bool(s.queued_restricted)


# -- worker capacity events ---------------------------------------------------------------


def on_worker_joined(s: Scheduling, e: ev.WorkerJoined) -> None:
    if e.address in s.workers:
        return
    ws = WorkerInfo(e.address, e.name, max(1, e.nthreads), e.memory_limit, dict(e.resources or {}))
    s.workers[e.address] = ws
    s.emit(ev.LogEvent("worker-joined", {"worker": e.address, "name": e.name}))
    for key in sorted(s.no_worker, key=lambda k: s.tasks[k].priority):
        ts = s.tasks[key]
        if candidates(s, ts):
            s.transition(ts, TS.QUEUED)


def on_seceded(s: Scheduling, e: ev.TaskSeceded) -> None:
    """A long-running task left its worker's thread budget: room for its subtasks."""
    ts = s.tasks.get(e.key)
    ws = s.workers.get(e.worker)
    if ts is None or ws is None or ts.processing_on != e.worker:
        return
    if e.key not in ws.long_running:
        ws.long_running.add(e.key)
        ws.occupancy = max(0.0, ws.occupancy - ts.occupancy)
        ts.occupancy = 0.0
