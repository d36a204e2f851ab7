"""Rebuilding the scheduler's state from the records a previous scheduler left in Redis.

Pure, like the state machine itself: the server reads the ``tasks``, ``workers`` and
``results`` hashes and hands them over as one :class:`~rdist.scheduler.events.StateRestored`
event. Results held by live workers or stored in Redis stay in memory; tasks that were
running on a live worker stay assigned to it (it will report them); everything else goes
back to ``released`` and is recomputed if still wanted -- through the ordinary transitions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rdist.scheduler import events as ev

if TYPE_CHECKING:
    from rdist.scheduler.state import SchedulerState, Task


def on_restored(state: SchedulerState, e: ev.StateRestored) -> None:
    from rdist.scheduler.state import TS, WorkerInfo

    for address, info in e.workers.items():
        if address not in state.workers:
            state.workers[address] = WorkerInfo(
                address,
                str(info.get("name", address)),
                max(1, int(info.get("nthreads", 1))),
                int(info.get("memory_limit", 0)),
                dict(info.get("resources") or {}),
            )
    tasks = [_task(state, key, record) for key, record in e.tasks.items()]
    for ts in tasks:
        for dep in list(ts.dependencies):
            if dep in state.tasks:
                state.tasks[dep].dependents.add(ts.key)
    for ts in tasks:
        for client in ts.who_wants:
            state.clients.setdefault(client, set()).add(ts.key)
    for ts in tasks:
        record = e.tasks[ts.key]
        _place(state, ts, record, e.errors.get(str(record.get("b"))))
    for ts in tasks:  # running tasks keep their inputs alive
        if ts.state is TS.PROCESSING:
            for dep in ts.dependencies:
                if dep in state.tasks:
                    state.tasks[dep].waiters.add(ts.key)
    for ts in tasks:
        if ts.state is TS.PROCESSING:
            _resume_coassigned(state, ts)
    for ts in sorted(tasks, key=lambda t: t.priority):
        if ts.state is TS.RELEASED and ts.key in state.tasks and state._needed(ts):
            state._transition(ts, TS.WAITING)
    for ts in tasks:  # results nobody needs any more are freed as usual
        if ts.key in state.tasks and ts.state in (TS.MEMORY, TS.RELEASED):
            state._release_if_unneeded(ts)
    for ts in tasks:
        state._mark(ts)


def _resume_coassigned(state: SchedulerState, ts: Task) -> None:
    """``ts`` runs on a live worker but some inputs are not in memory: it was co-assigned
    there and waits for them (records do not keep ``waiting_on``).

    Inputs being computed on the same worker become its wait again -- without it, work
    stealing would move an input away (or ``coassign.undo`` would miss a released one) and
    the worker would wait for data that never comes. An input that will not be computed
    there (released: its worker died) can never reach it: the task goes back to the
    scheduler, which frees it on the worker and lets it wait for the input like any other.
    """
    from rdist.scheduler.state import TS

    waiting_on = set()
    for key in ts.dependencies:
        dep = state.tasks.get(key)
        if dep is None or dep.state is TS.MEMORY:
            continue
        if dep.state is not TS.PROCESSING or dep.processing_on != ts.processing_on:
            state._transition(ts, TS.RELEASED)  # (the loop after this one re-waits it)
            return
        waiting_on.add(key)
    ts.waiting_on = waiting_on


def _task(state: SchedulerState, key: str, record: dict[str, Any]) -> Task:
    from rdist.scheduler.state import Task, key_prefix

    ts = Task(key=key, prefix=key_prefix(key), priority=tuple(record.get("p", ())))
    ts.dependencies = set(record.get("d", ()))
    ts.who_wants = set(record.get("ww", ()))
    ts.nbytes = int(record.get("nb", 0))
    ts.in_redis = bool(record.get("r"))
    ts.type_name = str(record.get("t", ""))
    ts.restrictions = set(record["w"]) if record.get("w") else None
    ts.loose = bool(record.get("l"))
    ts.retries = int(record.get("rt", 0))
    ts.resources = record.get("res") or None
    ts.suspicious = int(record.get("k", 0))
    state.tasks[key] = ts
    return ts


def _place(state: SchedulerState, ts: Task, record: dict[str, Any], error: bytes | None) -> None:
    """Put ``ts`` in the state its record says, if that is still true."""
    from rdist.scheduler.state import TS

    was = record.get("s")
    if was == "memory":
        holders = [a for a in record.get("wh", ()) if a in state.workers]
        if holders or ts.in_redis:
            ts.state = TS.MEMORY
            for address in holders:
                ts.who_has.add(address)
                state.workers[address].has_what.add(ts.key)
        return
    if was == "erred":
        ts.state = TS.ERRED
        ts.error = error  # the blamed task's stored (exception, traceback)
        ts.blame = record.get("b")
        ts.error_text = record.get("et")
        ts.error_kind = record.get("ek")
        return
    worker = record.get("on")
    if was == "processing" and worker in state.workers:
        ts.state = TS.PROCESSING
        ts.processing_on = worker
        ts.occupancy = state._estimate(ts)
        ws = state.workers[worker]
        ws.processing.add(ts.key)
        ws.occupancy += ts.occupancy
        for name, amount in (ts.resources or {}).items():
            ws.used_resources[name] = ws.used_resources.get(name, 0) + amount
