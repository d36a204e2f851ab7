"""Rebuilding the truth after Redis lost data, from the processes that hold it.

Redis may come back empty (a restart without persistence, ``FLUSHALL``) or miss its last
writes (a Sentinel fail-over: replication is asynchronous). The scheduler then starts a
new *epoch* (``rdist.store.epoch``); every worker re-announces the keys it holds
(:class:`~rdist.protocol.wire.HeldKeys`) and every client re-submits the graphs of its
futures. The two arrive in any order, and this room reconciles them (pure):

- a key the scheduler has no task for yet is remembered in ``held`` -- the graph naming
  it is on its way -- and claimed by the task the re-submitted graph makes: it starts in
  memory on its holders instead of running again (:func:`claim_held`). What nobody
  claims within :data:`HELD_SECONDS` is freed on its workers;
- a task in memory gains the holder as a replica; one running on that very worker
  finishes; one waiting, queued or released (the graph came first) is in memory at once;
- anything else (erred, running elsewhere) keeps its course, and the copy is freed.

A task sent again (:func:`sent_again`) has its spec stored again (Redis may have lost
it), and one that could never run because a dependency was unknown -- submitted in the
moment between the loss and the new epoch, before its inputs were re-submitted -- runs
after all once the graph brings that dependency, and so do the dependents it failed.
"""

from __future__ import annotations

from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import TS, Task, add_name, grown

#: Re-announced keys that no re-submitted graph claimed within this long are freed.
HELD_SECONDS = 120.0
#: States in which a task may take a re-announced result instead of running.
_NOT_STARTED = (TS.RELEASED, TS.WAITING, TS.QUEUED, TS.NO_WORKER)


def on_keys_held(s: Scheduling, e: ev.KeysHeld) -> None:
    ws = s.workers.get(e.worker)
    if ws is None:
        return  # it joins first (same round trip); a stranger's data is left alone
    _free_unclaimed(s, e.time)
    stale: list[str] = []
    for key, nbytes in e.keys.items():
        ts = s.tasks.get(key)
        if ts is None:
            holders = s.held[key][0] if key in s.held else set()
            holders.add(e.worker)
            s.held[key] = (holders, nbytes, e.time)
        elif ts.state is TS.MEMORY:
            ts.who_has = add_name(ts.who_has, e.worker)
            ws.has_what.add(key)
            s.mark(ts)
        elif ts.state is TS.PROCESSING and ts.processing_on == e.worker:
            ts.nbytes, ts.in_redis = nbytes, False
            s.transition(ts, TS.MEMORY, worker=e.worker)
        elif ts.state in _NOT_STARTED:
            _in_memory(s, ts, {e.worker}, nbytes)
        else:
            stale.append(key)
    if stale:
        s.emit(ev.FreeKeys(e.worker, stale))


def _in_memory(s: Scheduling, ts: Task, holders: set[str], nbytes: int) -> None:
    if ts.state is not TS.RELEASED:
        s.transition(ts, TS.RELEASED)
    _hold(s, ts, holders, nbytes)
    s.transition(ts, TS.MEMORY)


def _hold(s: Scheduling, ts: Task, holders: set[str], nbytes: int) -> None:
    for address in holders:
        ws = s.workers.get(address)
        if ws is not None:
            ts.who_has = add_name(ts.who_has, address)
            ws.has_what.add(ts.key)
    ts.nbytes, ts.in_redis = nbytes, False


def claim_held(s: Scheduling, new: list[Task]) -> None:
    """New tasks of a (re-submitted) graph whose results workers re-announced start in
    memory there; nothing is woken or told here (the graph's handling does both)."""
    if not s.held:
        return
    for ts in new:
        entry = s.held.pop(ts.key, None)
        if entry is None or ts.state is not TS.RELEASED or ts.broken:
            continue
        holders = {a for a in entry[0] if a in s.workers}
        if holders:
            _hold(s, ts, holders, entry[1])
            s.transition(ts, TS.MEMORY, restored=True)


def sent_again(s: Scheduling, metas: list[ev.TaskSpecMeta], specs: dict[str, bytes]) -> None:
    """Tasks we have, in a graph update once more (dependencies first)."""
    revived: set[str] = set()
    for meta in metas:
        ts = s.tasks[meta.key]
        if meta.key in specs:
            s.emit(ev.StoreSpec(meta.key, specs[meta.key]))
        if _may_run_now(s, ts, meta):
            _revive(s, ts)
            ts.broken = None
            for dep in ts.dependencies:
                s.tasks[dep].dependents = grown(s.tasks[dep].dependents, ts.key)
            revived.add(ts.key)
        elif ts.state is TS.ERRED and ts.blame in revived:
            _revive(s, ts)
            revived.add(ts.key)


def _may_run_now(s: Scheduling, ts: Task, meta: ev.TaskSpecMeta) -> bool:
    """Broken for want of a dependency that exists now (a cut cycle lost one: never)."""
    return (
        ts.broken is not None
        and ts.dependencies == set(meta.deps)
        and all(dep in s.tasks for dep in ts.dependencies)
    )


def _revive(s: Scheduling, ts: Task) -> None:
    if ts.state is TS.ERRED:
        s.transition(ts, TS.RELEASED)


def _free_unclaimed(s: Scheduling, now: float) -> None:
    expired = [key for key, (_, _, since) in s.held.items() if now - since > HELD_SECONDS]
    for key in expired:
        holders, _, _ = s.held.pop(key)
        for address in sorted(holders):
            if address in s.workers:
                s.emit(ev.FreeKeys(address, [key]))
