"""Rebuilding the scheduler's state from the records a previous scheduler left in Redis.

Pure, like the state machine itself: the server reads the ``tasks``, ``workers`` and
``results`` hashes and hands them over as one :class:`~rdist.scheduler.events.StateRestored`
event. Results held by live workers or stored in Redis stay in memory; tasks that were
running on a live worker stay assigned to it (it will report them); everything else goes
back to ``released`` and is recomputed if still wanted -- through the ordinary transitions
(the table's ``restored`` pairs put each task where its record says).

A record that does not decode cannot be recomputed (its dependencies are unknown): its
task errs, saying why and naming the key, every client is told (one holding a future for
it gets the error, the others ignore it), and its dependents err with it when needed.
The references of the ``funcs`` hash are counted again from the specs; a function or a
spec that no task names (left by a scheduler that died between two writes) is dropped.
"""

from __future__ import annotations

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler import functions
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import (
    FIRE_AND_FORGET,
    NOTHING,
    TS,
    Task,
    WorkerInfo,
    add_name,
    grown,
    key_prefix,
)


def on_restored(s: Scheduling, e: ev.StateRestored) -> None:
    for address, info in e.workers.items():
        if address not in s.workers:
            s.workers[address] = WorkerInfo(
                address, info.name, max(1, info.nthreads), info.memory_limit, dict(info.resources)
            )
    corrupt = [_corrupt_task(s, key, problem) for key, problem in e.corrupt.items()]
    tasks = [_task(s, key, record) for key, record in e.tasks.items()]
    _count_functions(s, e)
    for ts in tasks:
        for dep in ts.dependencies:
            if (dts := s.tasks.get(dep)) is not None:
                dts.dependents = grown(dts.dependents, ts.key)
            else:  # its record was lost or corrupt: err if it is ever needed, never wait
                ts.broken = f"dependency {dep!r} of {ts.key!r} is unknown (its record was lost)"
    for ts in tasks:
        for client in ts.who_wants:
            s.clients.setdefault(client, set()).add(ts.key)
    _err_corrupt(s, corrupt, e.clients)
    for ts in tasks:
        record = e.tasks[ts.key]
        _place(s, ts, record, e.errors.get(record.blame or ""))
    for ts in tasks:  # running tasks keep their inputs alive
        if ts.state is TS.PROCESSING:
            for dep in ts.dependencies:
                if (dts := s.tasks.get(dep)) is not None:
                    dts.waiters = grown(dts.waiters, ts.key)
    for ts in tasks:
        if ts.state is TS.PROCESSING:
            _resume_coassigned(s, ts)
    for ts in sorted(tasks, key=lambda t: t.priority):
        if ts.state is TS.RELEASED and ts.key in s.tasks and s.needed(ts):
            s.transition(ts, TS.WAITING)
    for ts in tasks:  # results nobody needs any more are freed as usual
        if ts.key in s.tasks and ts.state in (TS.MEMORY, TS.RELEASED):
            s.release_if_unneeded(ts)
    for ts in corrupt:  # (their dependents erred already, if they were needed)
        if ts.key in s.tasks:
            s.release_if_unneeded(ts)
    for ts in tasks + corrupt:
        if ts.key in s.tasks:
            s.mark(ts)


def _corrupt_task(s: Scheduling, key: str, problem: str) -> Task:
    ts = Task(key=key, prefix=key_prefix(key))
    ts.broken = (
        f"the stored record of task {key!r} could not be read ({problem}), so it cannot be "
        "recomputed: submit it again"
    )
    s.tasks[key] = ts
    return ts


def _err_corrupt(s: Scheduling, corrupt: list[Task], live_clients: list[str]) -> None:
    """Corrupt records' tasks err now; every client we know of hears of it (who held a
    future for the key was in the record that cannot be read)."""
    if not corrupt:
        return
    clients = sorted((set(s.clients) | set(live_clients)) - {FIRE_AND_FORGET})
    for ts in corrupt:
        s.transition(ts, TS.ERRED, error=None, blame=ts.key, error_text=ts.broken, error_kind=None)
        for client in clients:
            s.notify(client, ts)


def _count_functions(s: Scheduling, e: ev.StateRestored) -> None:
    """The references of ``funcs`` again, from the stored specs; what no task names goes."""
    names: dict[bytes, bytes] = {}
    orphans = []
    for key, func in e.spec_funcs.items():
        ts = s.tasks.get(key)
        if ts is None:
            orphans.append(key)
        elif func is not None:
            functions.name(s, ts, names.setdefault(func, func), None)
    if orphans:
        s.emit(ev.DropSpecs(orphans))
    for func in e.stored_funcs:
        if func not in s.func_refs:
            s.emit(ev.DropFunction(func))


def _resume_coassigned(s: Scheduling, ts: Task) -> None:
    """``ts`` runs on a live worker but some inputs are not in memory: it was co-assigned
    there and waits for them (records do not keep ``waiting_on``).

    Inputs being computed on the same worker become its wait again -- without it, work
    stealing would move an input away (or ``coassign.undo`` would miss a released one) and
    the worker would wait for data that never comes. An input that will not be computed
    there (released: its worker died) can never reach it: the task goes back to the
    scheduler, which frees it on the worker and lets it wait for the input like any other.
    """
    waiting_on: set[str] = set()
    for key in ts.dependencies:
        dep = s.tasks.get(key)
        if dep is None or dep.state is TS.MEMORY:
            continue
        if dep.state is not TS.PROCESSING or dep.processing_on != ts.processing_on:
            s.transition(ts, TS.RELEASED)  # (the loop after this one re-waits it)
            return
        waiting_on.add(key)
    ts.waiting_on = waiting_on or NOTHING


def _task(s: Scheduling, key: str, record: wire.TaskRecord) -> Task:
    ts = Task(key=key, prefix=key_prefix(key), priority=record.priority)
    ts.dependencies = set(record.deps) if record.deps else NOTHING
    for client in record.who_wants:
        ts.who_wants = add_name(ts.who_wants, client)
    ts.nbytes = record.nbytes
    ts.in_redis = record.in_redis
    ts.type_name = record.type_name
    ts.restrictions = set(record.restrictions) if record.restrictions else None
    ts.loose = record.loose
    ts.retries = record.retries
    ts.resources = record.resources or None
    ts.suspicious = record.suspicious
    s.tasks[key] = ts
    return ts


def _place(s: Scheduling, ts: Task, record: wire.TaskRecord, error: bytes | None) -> None:
    """Put ``ts`` in the state its record says, if that is still true."""
    was = record.state
    if was == TS.MEMORY.value:
        holders = [a for a in record.who_has if a in s.workers]
        if holders or ts.in_redis:
            for address in holders:
                ts.who_has = add_name(ts.who_has, address)
                s.workers[address].has_what.add(ts.key)
            s.transition(ts, TS.MEMORY, restored=True)
        return
    if was == TS.ERRED.value:
        s.transition(
            ts,
            TS.ERRED,
            error=error,  # the blamed task's stored (exception, traceback)
            blame=record.blame,
            error_text=record.error_text,
            error_kind=record.error_kind,
        )
        return
    worker = s.workers.get(record.processing_on or "")
    if was == TS.PROCESSING.value and worker is not None:
        s.transition(ts, TS.PROCESSING, running_on=worker)
