"""Work stealing: tasks waiting on a busy worker move to an idle one.

A task assigned to a worker but not started there yet (the worker has more tasks than
threads) may move when another allowed worker sits idle and nothing is queued at the
scheduler for it. The move is a handshake, so that a task is never run twice: the scheduler
asks the victim (:class:`~rdist.scheduler.events.StealRequest`); the victim drops the task
only if it has not started it and answers (:class:`~rdist.scheduler.events.StealResponse`);
only a confirmed steal reassigns the task (the table's ``processing -> processing``).
Functions over the state's internal interface.
"""

from __future__ import annotations

from rdist.scheduler import events as ev
from rdist.scheduler import placement
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import TS, Task, WorkerInfo

#: A task must have waited this long on its worker before it is worth moving.
STEAL_AFTER_SECONDS = 0.05
#: Balance at most this often (seconds of event time): looking is not free.
BALANCE_INTERVAL = 0.01
#: Never move a task whose inputs on the victim (and not on the thief) exceed this.
MAX_MOVED_BYTES = 1 << 20
#: Tasks expected to take less than this are not worth a handshake: the victim gets
#: through them sooner than the steal would complete.
MIN_DURATION = 0.002


def free_threads(ws: WorkerInfo) -> int:
    return ws.nthreads - (len(ws.processing) - len(ws.long_running))


def balance(state: Scheduling, now: float) -> None:
    """Ask busy workers to give up tasks they have not started, for idle workers."""
    if not state.workers or now < state.last_balance + BALANCE_INTERVAL:
        return
    state.last_balance = now
    incoming: dict[str, int] = {}
    for _, to in state.stealing.values():
        incoming[to] = incoming.get(to, 0) + 1
    idle = {w.address: free_threads(w) - incoming.get(w.address, 0) for w in state.workers.values()}
    idle = {a: n for a, n in idle.items() if n > 0}
    if not idle or placement.has_queued_work(state):
        return
    victims = [w for w in state.workers.values() if free_threads(w) < 0]
    victims.sort(key=lambda w: free_threads(w))
    for victim in victims:
        surplus = -free_threads(victim) - sum(
            1 for v, _ in state.stealing.values() if v == victim.address
        )
        if surplus <= 0:
            continue
        movable = [
            t
            for k in victim.processing
            if k not in victim.long_running
            and k not in state.stealing
            and not (t := state.tasks[k]).waiting_on
            and not _has_coassigned(state, t)
        ]
        movable.sort(key=lambda t: t.priority, reverse=True)  # lowest priority first
        for ts in movable[:surplus]:
            if (
                now - ts.processing_since < STEAL_AFTER_SECONDS
                or placement.estimate(state, ts) < MIN_DURATION
            ):
                continue
            thief = _thief(state, ts, victim, idle)
            if thief is None:
                continue
            idle[thief] -= 1
            if not idle[thief]:
                del idle[thief]
            state.stealing[ts.key] = (victim.address, thief)
            state.emit(ev.StealRequest(victim.address, ts.key))
            if not idle:
                return


def _has_coassigned(state: Scheduling, ts: Task) -> bool:
    """Dependents wait for ``ts`` on its worker: it must stay there."""
    return any(
        ts.key in d.waiting_on
        for k in ts.dependents
        if (d := state.tasks.get(k)) is not None and d.processing_on
    )


def _thief(state: Scheduling, ts: Task, victim: WorkerInfo, idle: dict[str, int]) -> str | None:
    best, best_free = None, 0
    for ws in placement.candidates(state, ts):
        free = idle.get(ws.address, 0)
        if ws is victim or free <= best_free or not placement.resources_free(ws, ts):
            continue
        if _moved_bytes(state, ts, ws) > MAX_MOVED_BYTES:
            continue
        best, best_free = ws.address, free
    return best


def _moved_bytes(state: Scheduling, ts: Task, thief: WorkerInfo) -> int:
    total = 0
    for key in ts.dependencies:
        dep = state.tasks.get(key)
        if dep is not None and thief.address not in dep.who_has and not dep.in_redis:
            total += dep.nbytes
    return total


def answered(state: Scheduling, e: ev.StealResponse) -> None:
    """The victim answered: move the task if it gave it up."""
    pending = state.stealing.pop(e.key, None)
    ts = state.tasks.get(e.key)
    if ts is None or not e.ok or ts.state is not TS.PROCESSING:
        return
    if pending is None:
        if ts.processing_on == e.worker:
            _gave_up_unasked(state, ts)
        return
    victim, thief = pending
    if ts.processing_on != victim or victim != e.worker:
        return
    target = state.workers.get(thief)
    if (
        target is None
        or target not in placement.candidates(state, ts)
        or not placement.has_room(state, target, ts)
    ):
        roomy = [
            w
            for w in placement.candidates(state, ts)
            if w.address != victim and placement.has_room(state, w, ts)
        ]
        target = min(roomy, key=lambda w: len(w.processing) / w.nthreads) if roomy else None
    if target is None:
        target = state.workers[victim]  # nobody has room any more: give it back
    state.transition(ts, TS.PROCESSING, worker=target)


def _gave_up_unasked(state: Scheduling, ts: Task) -> None:
    """The worker ``ts`` is assigned to dropped it for a steal request this scheduler does
    not know about: one sent by a predecessor that died before reading the answer, or one
    overtaken by a release and a new assignment to the same worker. Either way the worker
    may no longer hold the task, and nothing else would ever run it: assign it to the same
    worker again (a worker that still holds it ignores the repeat, so it never runs twice)."""
    state.transition(ts, TS.PROCESSING, worker=state.workers[ts.processing_on or ""])
