"""Data operations: where copies of results are, and which workers take work.

- ``DataScattered``: a client pushed data to workers itself (``client.scatter``): the keys
  are in memory without having run.
- ``DataReplicated``: a worker now holds more keys (inputs it fetched, data a leaving
  peer handed over); a key released meanwhile is freed there at once.
- ``WorkerStatusChanged``: a worker past its memory *pause* fraction is ``paused``: it gets
  no new tasks (``placement.has_room`` says no) until it reports ``running`` again, when
  the queued tasks flow to it as usual.
- ``DropReplicas``: forget extra copies (``client.replicate`` with fewer copies wanted,
  ``client.rebalance`` after a move) and tell those workers to free them -- never the last
  copy of a key that is not also stored in Redis.
- ``WorkersRetiring``: ``client.retire_workers`` -- those workers are ``closing``: they
  get no new task (``placement.has_room`` says no) while their data moves to peers, and
  tasks queued there run elsewhere once they leave.
- ``ShutdownRequested``: the shell stops once this batch is written.
- ``Barrier``: answer the client once everything it sent before has been handled; the
  answer goes out in the same pipeline as the task records, so ``who_has`` is exact then.
"""

from __future__ import annotations

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import TS, Task, add_name, drop_name, key_prefix

WORKER_STATUSES = ("running", "paused")
#: a retiring worker's status: no new tasks, never back to running
CLOSING = "closing"


def on_scattered(s: Scheduling, e: ev.DataScattered) -> None:
    if e.client in s.departed:  # nobody could release it: the copies go at once
        _drop_scattered(s, [item for item in e.items if item[0] not in s.tasks])
        return
    s.clients.setdefault(e.client, set())
    for key, holders, nbytes, in_redis in e.items:
        ts = s.tasks.get(key)
        if ts is None:
            ts = Task(key=key, prefix=key_prefix(key), priority=(0, next(s.generation), 0))
            s.tasks[key] = ts
        ts.nbytes, ts.in_redis = nbytes, in_redis
        for address in holders:
            ws = s.workers.get(address)
            if ws is not None:
                ts.who_has = add_name(ts.who_has, address)
                ws.has_what.add(key)
        s.want(e.client, key)
        if ts.state is TS.RELEASED:
            s.transition(ts, TS.MEMORY)
        s.mark(ts)


def on_replicated(s: Scheduling, e: ev.DataReplicated) -> None:
    ws = s.workers.get(e.worker)
    if ws is None:
        return
    stale = []
    for key in e.keys:
        ts = s.tasks.get(key)
        if ts is not None and ts.state is TS.MEMORY:
            ts.who_has = add_name(ts.who_has, e.worker)
            ws.has_what.add(key)
            s.mark(ts)
        else:
            stale.append(key)  # released meanwhile: the copy must not linger
    if stale:
        s.emit(ev.FreeKeys(e.worker, stale))


def on_worker_status(s: Scheduling, e: ev.WorkerStatusChanged) -> None:
    ws = s.workers.get(e.address)
    if ws is None or e.status not in WORKER_STATUSES or ws.status in (e.status, CLOSING):
        return
    ws.status = e.status
    s.emit(ev.LogEvent(f"worker-{e.status}", {"worker": e.address}))


def on_drop_replicas(s: Scheduling, e: ev.DropReplicas) -> None:
    for key, addresses in e.keys.items():
        ts = s.tasks.get(key)
        if ts is None or ts.state is not TS.MEMORY:
            continue
        for address in addresses:
            if address not in ts.who_has or (len(ts.who_has) == 1 and not ts.in_redis):
                continue
            ts.who_has = drop_name(ts.who_has, address)
            ws = s.workers.get(address)
            if ws is not None:
                ws.has_what.discard(key)
                s.emit(ev.FreeKeys(address, [key]))
            s.mark(ts)


def on_retiring(s: Scheduling, e: ev.WorkersRetiring) -> None:
    for address in e.workers:
        ws = s.workers.get(address)
        if ws is None or ws.status == CLOSING:
            continue
        ws.status = CLOSING
        s.emit(ev.LogEvent("worker-retiring", {"worker": address, "client": e.client}))


def on_shutdown(s: Scheduling, e: ev.ShutdownRequested) -> None:
    s.emit(ev.LogEvent("shutdown", {"client": e.client}))
    s.emit(ev.StopServing(e.client))


def on_barrier(s: Scheduling, e: ev.Barrier) -> None:
    s.emit(ev.Notify(e.client, wire.BarrierReached(e.id)))


def _drop_scattered(s: Scheduling, items: list[wire.ScatterItem]) -> None:
    for key, holders, _, in_redis in items:
        for address in holders:
            if address in s.workers:
                s.emit(ev.FreeKeys(address, [key]))
        if in_redis:
            s.emit(ev.DropResult(key))
