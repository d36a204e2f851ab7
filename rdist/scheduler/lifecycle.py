"""A task's ordinary life, as clients and workers drive it: clients join and leave, submit
graphs, release and cancel keys; workers report tasks finished.

Lifetime: a task is *needed* while a client wants it or while a dependent still waits on
it. A task that is no longer needed is released; a released task is forgotten once no
dependent remembers it (so lineage survives for recomputation).

Nothing may outlive every client: a graph from a client that has left (it submitted after
``close()``, or an older client raced its own departure) creates nothing, and a cycle in
a graph (which the client refuses, but an older one may send) is cut where it closes, the
task there erring -- a cycle would wait forever and never be released.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler import functions, placement, reconcile
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import (
    FIRE_AND_FORGET,
    NOTHING,
    TS,
    Task,
    add_name,
    discard,
    grown,
    key_prefix,
    notifiable,
    spec_function,
)

#: Clients remembered as gone (ids are never reused): what they send later is ignored.
DEPARTED_REMEMBERED = 10_000

# -- clients --------------------------------------------------------------------------------


def on_client_joined(s: Scheduling, e: ev.ClientJoined) -> None:
    s.departed.pop(e.client, None)  # (ids are never reused; a test may reuse one)
    s.clients.setdefault(e.client, set())


def on_client_left(s: Scheduling, e: ev.ClientLeft) -> None:
    keys = s.clients.pop(e.client, set())
    s.unwant(e.client, keys)
    if e.client != FIRE_AND_FORGET:
        s.emit(ev.ForgetClient(e.client))
        departed = s.departed
        departed[e.client] = None
        if len(departed) > DEPARTED_REMEMBERED:
            del departed[next(iter(departed))]  # the oldest


# -- graphs -----------------------------------------------------------------------------------


def on_graph(s: Scheduling, e: ev.GraphSubmitted) -> None:
    if e.client in s.departed:
        return  # nobody could ever release what it would create
    s.clients.setdefault(e.client, set())
    generation = next(s.generation)
    new: list[Task] = []
    names: dict[bytes, bytes] = {}  #: one bytes object per function for all its tasks
    again: list[ev.TaskSpecMeta] = []  #: tasks we have, sent once more
    for index, meta in enumerate(e.tasks):
        if meta.key in s.tasks:
            again.append(meta)
        else:
            priority = (-meta.priority, generation, index)
            ts = _new_task(s, meta, priority, e.specs.get(meta.key))
            if ts.spec is not None:
                func = spec_function(ts.spec)
                if func is not None:
                    func = names.setdefault(func, func)
                    functions.name(s, ts, func, e.funcs.get(func))
            new.append(ts)
    _cut_cycles(new)
    for ts in new:
        _link_dependencies(s, ts)
    if again:  # e.g. a client rebuilding after Redis lost data
        reconcile.sent_again(s, again, e.specs)
    for key in e.wanted:
        s.want(e.client, key)
    for key in e.fire_and_forget:
        s.want(FIRE_AND_FORGET, key)
    reconcile.claim_held(s, new)  # after Redis lost data: results workers re-announced
    # new tasks, and released ones kept only for lineage that are wanted again
    revived = [s.tasks[m.key] for m in e.tasks] + [
        s.tasks[k] for k in (*e.wanted, *e.fire_and_forget) if k in s.tasks
    ]
    finished_before = {ts.key for ts in revived if ts.state in (TS.MEMORY, TS.ERRED)}
    for ts in revived:
        if ts.state is TS.RELEASED and s.needed(ts):
            s.transition(ts, TS.WAITING)
    # keys wanted that were already finished get an answer straight away (those that
    # finished just now, e.g. erred on a failed dependency, were notified on the way)
    for key in e.wanted:
        known = s.tasks.get(key)
        if key in finished_before and known is not None:
            s.notify(e.client, known)
    for key in e.fire_and_forget:
        known = s.tasks.get(key)
        if known is not None and known.state in (TS.MEMORY, TS.ERRED):
            s.unwant(FIRE_AND_FORGET, [key])


def _new_task(
    s: Scheduling, meta: ev.TaskSpecMeta, priority: tuple[Any, ...], spec: bytes | None
) -> Task:
    ts = Task(
        key=meta.key,
        prefix=key_prefix(meta.key),
        priority=priority,
        restrictions=set(meta.workers) if meta.workers else None,
        loose=meta.loose,
        retries=meta.retries,
        resources=meta.resources or None,
    )
    ts.dependencies = set(meta.deps) if meta.deps else NOTHING
    s.tasks[meta.key] = ts
    if spec is not None:
        s.emit(ev.StoreSpec(meta.key, spec))
        ts.spec = spec  # travels with the first assignment, then only in Redis
    return ts


def _cut_cycles(new: list[Task]) -> None:
    """Cut every dependency cycle among a graph's new tasks where it closes: that task
    loses the dependency and errs when needed, naming the cycle (its dependents err with
    it). Only new tasks can close a cycle (older ones never depend on newer ones); a graph
    listing dependencies before dependents, as clients do, is checked with a lookup per
    dependency."""
    if not any(ts.dependencies for ts in new):
        return
    order = {ts.key: i for i, ts in enumerate(new)}
    if not any(order.get(dep, -1) >= i for i, ts in enumerate(new) for dep in ts.dependencies):
        return
    by_key = {ts.key: ts for ts in new}
    done: set[str] = set()
    closing: list[tuple[Task, str, list[str]]] = []  #: (task, dependency, the cycle)
    for root in new:
        if root.key in done:
            continue
        path, on_path = [root], {root.key: 0}
        todo = [iter(sorted(root.dependencies))]
        while path:
            ts = path[-1]
            for dep in todo[-1]:
                if dep not in by_key or dep in done:
                    continue
                if dep in on_path:
                    cycle = [t.key for t in path[on_path[dep] :]] + [dep]
                    closing.append((ts, dep, cycle))
                    continue
                on_path[dep] = len(path)
                path.append(by_key[dep])
                todo.append(iter(sorted(by_key[dep].dependencies)))
                break
            else:
                done.add(ts.key)
                del on_path[ts.key]
                path.pop()
                todo.pop()
    for ts, dep, cycle in closing:
        discard(ts.dependencies, dep)
        shown = " -> ".join(repr(k) for k in cycle)
        ts.broken = f"{ts.key!r} is part of a dependency cycle ({shown}): it can never run"


def _link_dependencies(s: Scheduling, ts: Task) -> None:
    for dep_key in ts.dependencies:
        dep = s.tasks.get(dep_key)
        if dep is None:
            # a dependency nobody holds any more: fail loudly rather than wait forever
            ts.broken = f"dependency {dep_key!r} of {ts.key!r} is unknown (released?)"
            continue
        dep.dependents = grown(dep.dependents, ts.key)


# -- releasing and cancelling -----------------------------------------------------------------


def on_released(s: Scheduling, e: ev.KeysReleased) -> None:
    wanted = s.clients.get(e.client)
    if wanted is None:
        return
    keys = [k for k in e.keys if k in wanted]
    wanted.difference_update(keys)
    s.unwant(e.client, keys, already_removed=True)


def on_passed(s: Scheduling, e: ev.KeysPassed) -> None:
    """Keys change hands -- a queue item's futures taken by a client, a client's futures
    held by a variable or dataset: the taker wants them first, then the giver lets go, so
    nothing is released in between. A client taking keys hears at once of the finished
    ones (and of unknown ones, e.g. cancelled by a restart, as cancelled); a holder taking
    them hears nothing: it has no stream."""
    if e.taker:
        tell = notifiable(e.taker)
        for key in e.keys:
            ts = s.tasks.get(key)
            if ts is None:
                if tell:
                    s.emit(ev.Notify(e.taker, wire.KeyCancelled(key)))
                continue
            s.want(e.taker, key)
            if ts.state is TS.RELEASED and s.needed(ts):  # kept for lineage: compute again
                s.transition(ts, TS.WAITING)
            elif tell and ts.state in (TS.MEMORY, TS.ERRED):
                s.notify(e.taker, ts)
    if e.giver:
        wanted = s.clients.get(e.giver)
        if wanted is None:
            return
        keys = [k for k in e.keys if k in wanted]
        wanted.difference_update(keys)
        if not wanted and wire.is_holder(e.giver):
            del s.clients[e.giver]  # a holder holds nothing more: it is gone for good
        s.unwant(e.giver, keys, already_removed=True)


def on_cancelled(s: Scheduling, e: ev.KeysCancelled) -> None:
    unknown = [key for key in e.keys if key not in s.tasks]
    for ts in _with_dependents(s, e.keys):
        clients = set(ts.who_wants) if e.force else ({e.client} & ts.who_wants)
        for client in clients:
            if notifiable(client):
                s.emit(ev.Notify(client, wire.KeyCancelled(ts.key)))
            s.clients.get(client, set()).discard(ts.key)
            s.unwant(client, [ts.key], already_removed=True)
    for key in unknown:  # not the keys just forgotten above: they were notified
        s.emit(ev.Notify(e.client, wire.KeyCancelled(key)))


def _with_dependents(s: Scheduling, keys: Iterable[str]) -> list[Task]:
    """The tasks and all their unfinished dependents, transitively."""
    seen: dict[str, Task] = {}
    stack = [s.tasks[k] for k in keys if k in s.tasks]
    while stack:
        ts = stack.pop()
        if ts.key in seen:
            continue
        seen[ts.key] = ts
        for d in ts.dependents:
            dts = s.tasks.get(d)
            if dts is not None and dts.state not in (TS.MEMORY, TS.ERRED):
                stack.append(dts)
    return list(seen.values())


# -- results ----------------------------------------------------------------------------------


def on_finished(s: Scheduling, e: ev.TasksFinished) -> None:
    ws = s.workers.get(e.worker)
    for item in e.tasks:
        ts = s.tasks.get(item.key)
        prefix = ts.prefix if ts is not None else key_prefix(item.key)
        placement.learn_duration(s, prefix, item.duration)
        if ts is None or ts.state is not TS.PROCESSING or ts.processing_on != e.worker:
            if ts is None and item.in_redis:
                # forgotten while it ran (released mid-run): the result it stored after
                # the task's own removal would stay in Redis for good
                s.emit(ev.DropResult(item.key))
            if ts is not None and ts.state is TS.MEMORY and ws is not None:
                # a duplicate or late completion: the data is valid, keep it as a replica
                ts.who_has = add_name(ts.who_has, e.worker)
                ws.has_what.add(ts.key)
                s.mark(ts)
            elif ws is not None:
                s.emit(ev.FreeKeys(e.worker, [item.key]))
            continue
        ts.nbytes = item.nbytes
        ts.in_redis = item.in_redis
        ts.type_name = item.type_name
        s.transition(ts, TS.MEMORY, worker=e.worker, inline=item.inline)
