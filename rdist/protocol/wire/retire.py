"""Messages of a graceful retirement and of a cluster shutdown.

- on the ``sched`` stream: :class:`RetireWorkers` (``client.retire_workers``: these
  workers take no new tasks from now on) and :class:`Shutdown` (``client.shutdown``: the
  scheduler stops);
- on a worker's stream: :class:`Retire` -- hand the results only this worker holds to
  ``peers``, leave, and stay gone (the nanny does not start a new worker).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdist.protocol.wire.base import NAME, NAMES, Message, fields


@dataclass(slots=True)
class RetireWorkers(Message):
    """``client.retire_workers``: ``workers`` are closing; place nothing new on them."""

    OP = "retire-workers"
    client: str
    workers: list[str]


fields(RetireWorkers, client=NAME, workers=NAMES)


@dataclass(slots=True)
class Shutdown(Message):
    """``client.shutdown()``: the scheduler stops serving (its workers were told to retire)."""

    OP = "shutdown"
    client: str


fields(Shutdown, client=NAME)


@dataclass(slots=True)
class Retire(Message):
    """Leave for good: results only we hold go to ``peers`` first (never another retiring
    worker), and a nanny does not replace us."""

    OP = "retire"
    peers: list[str] = field(default_factory=list)


fields(Retire, peers=NAMES)

__all__ = ["Retire", "RetireWorkers", "Shutdown"]
