"""Scheduler handlers for worker status and data placement (pure, like the state machine).

- ``WorkerStatusChanged``: a worker past its memory *pause* fraction is ``paused``: it gets
  no new tasks (``SchedulerState._has_room`` says no) until it reports ``running`` again,
  when the queued tasks flow to it as usual.
- ``DropReplicas``: forget extra copies (``client.replicate`` with fewer copies wanted,
  ``client.rebalance`` after a move) and tell those workers to free them -- never the last
  copy of a key that is not also stored in Redis.
- ``Barrier``: answer the client once everything it sent before has been handled; the
  answer goes out in the same pipeline as the task records, so ``who_has`` is exact then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdist.scheduler import events as ev

if TYPE_CHECKING:
    from rdist.scheduler.state import SchedulerState

WORKER_STATUSES = ("running", "paused")


def on_worker_status(state: SchedulerState, e: ev.WorkerStatusChanged) -> None:
    ws = state.workers.get(e.address)
    if ws is None or e.status not in WORKER_STATUSES or ws.status == e.status:
        return
    ws.status = e.status
    state._emit(ev.LogEvent(f"worker-{e.status}", {"worker": e.address}))


def on_drop_replicas(state: SchedulerState, e: ev.DropReplicas) -> None:
    from rdist.scheduler.state import TS

    for key, addresses in e.keys.items():
        ts = state.tasks.get(key)
        if ts is None or ts.state is not TS.MEMORY:
            continue
        for address in addresses:
            if address not in ts.who_has or (len(ts.who_has) == 1 and not ts.in_redis):
                continue
            ts.who_has.discard(address)
            ws = state.workers.get(address)
            if ws is not None:
                ws.has_what.discard(key)
                state._emit(ev.FreeKeys(address, [key]))
            state._mark(ts)


def on_barrier(state: SchedulerState, e: ev.Barrier) -> None:
    state._emit(ev.Notify(e.client, "", "barrier", {"id": e.id}))
