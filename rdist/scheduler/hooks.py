"""Scheduler plugins in the shell: the hooks each handled batch of events calls.

The state machine knows nothing of plugins. The server hands its events to
:func:`decide`; with no plugin that is one call to the state machine and nothing more.
With plugins, the events are mapped to hooks (a graph submitted -> ``update_graph``, a
worker joining -> ``add_worker``, ...) and the entries the state machine added to its
transition log go to every ``transition`` hook, in order, after the state machine
decided -- its decisions never wait on a plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rdist.plugins.scheduler_side import SchedulerPlugins
from rdist.scheduler import events as ev
from rdist.scheduler.state import SchedulerState


def decide(
    state: SchedulerState,
    plugins: SchedulerPlugins,
    scheduler: Any,
    events: Sequence[ev.Event],
    flush: bool,
    place: bool = True,
) -> list[ev.Instruction]:
    """``state.handle(*events)``, with the plugins' hooks called after it."""
    if not plugins.active:
        return state.handle(*events, flush=flush, place=place)
    log = state.transition_log
    last = log[-1] if log else None
    out = state.handle(*events, flush=flush, place=place)
    for event in events:
        hook = _HOOKS.get(type(event))
        if hook is not None:
            hook(plugins, scheduler, event)
    plugins.transitions(log, last)
    return out


def place(state: SchedulerState, plugins: SchedulerPlugins) -> list[ev.Instruction]:
    """``state.place()``, the plugins told of the transitions it made."""
    if not plugins.active:
        return state.place()
    log = state.transition_log
    last = log[-1] if log else None
    out = state.place()
    plugins.transitions(log, last)
    return out


def _graph(plugins: SchedulerPlugins, scheduler: Any, e: ev.GraphSubmitted) -> None:
    plugins.call(
        "update_graph",
        scheduler,
        client=e.client,
        keys=set(e.wanted),
        tasks=[t.key for t in e.tasks],
        annotations={},
        priority={t.key: t.priority for t in e.tasks},
        dependencies={t.key: set(t.deps) for t in e.tasks},
        stimulus_id=e.stimulus_id,
    )


_HOOKS: dict[type[ev.Event], Callable[[SchedulerPlugins, Any, Any], None]] = {
    ev.GraphSubmitted: _graph,
    ev.ClientJoined: lambda p, s, e: p.call("add_client", s, client=e.client),
    ev.ClientLeft: lambda p, s, e: p.call("remove_client", s, client=e.client),
    ev.WorkerJoined: lambda p, s, e: p.call("add_worker", s, worker=e.address),
    ev.WorkerLeft: lambda p, s, e: p.call(
        "remove_worker", s, worker=e.address, stimulus_id=e.stimulus_id
    ),
    ev.RestartRequested: lambda p, s, e: p.call("restart", s),
}
