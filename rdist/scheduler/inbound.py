"""Entries of the ``sched`` stream -> events for the state machine.

Every entry is decoded by the wire records (:data:`rdist.protocol.wire.SCHEDULER`, bundles
included): anything without the shape the scheduler needs raises one
:class:`~rdist.protocol.wire.MalformedMessage`, and the server sets the entry aside. What
comes out of here is checked; the rows a message carries per task (a graph's tasks, a
report's finished tasks) go into the events as they are, without a second allocation.

The stimulus id of an event is the id of its entry (``<entry>.<n>`` for the n-th message
of a bundle), so the transition log says which entry caused what.
"""

from __future__ import annotations

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.scheduler.amm_runner import AmmRequested


def decode_entry(entry_id: bytes, payload: bytes | None, now: float, stream: str) -> list[ev.Event]:
    """Stream entry -> events; raises MalformedMessage for anything unexpected (in a
    bundle, one bad message sets the whole entry aside)."""
    messages = wire.SCHEDULER.decode(payload, stream)
    stimulus = entry_id.decode()
    if len(messages) == 1:
        (only,) = messages
        return events_of(only, stimulus, now)
    return [e for n, msg in enumerate(messages) for e in events_of(msg, f"{stimulus}.{n}", now)]


def events_of(msg: wire.Message, s: str, t: float) -> list[ev.Event]:
    """The events one decoded message means (most often one; a worker's report, several)."""
    match msg:
        case wire.TaskDone():
            return _report(msg, s, t)
        case wire.UpdateGraph():
            return [
                ev.GraphSubmitted(
                    s,
                    t,
                    msg.client,
                    msg.tasks,
                    msg.wanted,
                    msg.fire_and_forget,
                    msg.specs,
                    msg.funcs,
                )
            ]
        case wire.ReleaseKeys():
            return [ev.KeysReleased(s, t, msg.client, msg.keys)]
        case wire.Cancel():
            return [ev.KeysCancelled(s, t, msg.client, msg.keys, msg.force)]
        case wire.Retry():
            return [ev.RetryRequested(s, t, msg.client, msg.keys)]
        case wire.RestartTasks():
            return [ev.TasksRestarted(s, t, msg.worker, msg.keys)]
        case wire.ClientJoin():
            return [ev.ClientJoined(s, t, msg.client)]
        case wire.ClientLeave():
            return [ev.ClientLeft(s, t, msg.client)]
        case wire.Scatter():
            return [ev.DataScattered(s, t, msg.client, msg.items)]
        case wire.WorkerJoin():
            return [
                ev.WorkerJoined(
                    s, t, msg.address, msg.name, msg.nthreads, msg.memory_limit, msg.resources
                )
            ]
        case wire.WorkerLeave():
            return [ev.WorkerLeft(s, t, msg.address)]
        case wire.WorkerLost():
            return [ev.WorkerLeft(s, t, msg.address, lost=True)]
        case wire.Restart():
            return [ev.RestartRequested(s, t, msg.client)]
        case wire.AddKeys():
            return [ev.DataReplicated(s, t, msg.worker, msg.keys)]
        case wire.HeldKeys():
            return [ev.KeysHeld(s, t, msg.worker, msg.keys)]
        case wire.WorkerStatus():
            return [ev.WorkerStatusChanged(s, t, msg.address, msg.status)]
        case wire.DropReplicas():
            return [ev.DropReplicas(s, t, msg.client, msg.keys)]
        case wire.Barrier():
            return [ev.Barrier(s, t, msg.client, msg.id)]
        case wire.Wake():
            return []
        case wire.StoryRequest():
            return [ev.StoryRequested(s, t, msg.client, msg.id, msg.keys)]
        case wire.PassKeys():
            return [ev.KeysPassed(s, t, msg.keys, msg.taker, msg.giver)]
        case wire.RetireWorkers():
            return [ev.WorkersRetiring(s, t, msg.client, msg.workers)]
        case wire.Shutdown():
            return [ev.ShutdownRequested(s, t, msg.client)]
        case wire.RegisterSchedulerPlugin():
            return [ev.PluginOffered(s, t, msg)]
        case wire.AmmRequest():  # (the shell's: see rdist.scheduler.amm_runner)
            return [AmmRequested(s, t, msg.client, msg.id, msg.action, msg.workers)]
    raise wire.MalformedMessage(f"no scheduler event for {type(msg).__name__}", where="sched")


def _report(msg: wire.TaskDone, s: str, t: float) -> list[ev.Event]:
    worker = msg.worker
    out: list[ev.Event] = []
    if msg.done:
        out.append(ev.TasksFinished(s, t, worker, msg.done))
    for erred in msg.erred:
        out.append(ev.TaskErred(s, t, worker, erred.key, erred.error, erred.duration))
    if msg.replicated:
        out.append(ev.DataReplicated(s, t, worker, msg.replicated))
    for missing in msg.missing:
        out.append(ev.MissingData(s, t, worker, missing.key, missing.deps, missing.tried))
    for key in msg.seceded:
        out.append(ev.TaskSeceded(s, t, worker, key))
    for stolen in msg.stolen:
        out.append(ev.StealResponse(s, t, worker, stolen.key, stolen.ok))
    for key in msg.rescheduled:
        out.append(ev.TaskRescheduled(s, t, worker, key))
    return out
