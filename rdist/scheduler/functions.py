"""Which pickled functions Redis keeps: the ``funcs`` hash, counted by reference.

Each distinct function is pickled once and stored once, under its hash; task specs name
it. A client sends the pickle with every graph update naming it; the scheduler stores it
when a living task first names it and drops it with the last one -- so a cluster that ran
a million distinct closures keeps none of them once their tasks are forgotten. The
scheduler reads the hash a spec names from the spec's first bytes
(:func:`~rdist.scheduler.model.spec_function`): nothing is unpickled, nothing unpacked.
"""

from __future__ import annotations

from rdist.scheduler import events as ev
from rdist.scheduler.interface import Scheduling
from rdist.scheduler.model import Task


def name(s: Scheduling, ts: Task, func: bytes, pickled: bytes | None) -> None:
    """``ts`` names ``func``; the first living task to do so stores its pickle (when the
    message brought it: an older client stored it itself)."""
    ts.func = func
    count = s.func_refs.get(func, 0)
    s.func_refs[func] = count + 1
    if not count and pickled is not None:
        s.emit(ev.StoreFunction(func, pickled))


def unname(s: Scheduling, ts: Task) -> None:
    """``ts`` is forgotten: the function goes with the last task naming it."""
    func = ts.func
    if func is None:
        return
    ts.func = None
    count = s.func_refs.get(func, 0) - 1
    if count > 0:
        s.func_refs[func] = count
    else:
        s.func_refs.pop(func, None)
        s.emit(ev.DropFunction(func))
