"""Messages of rdist's P2P exchange (``rdist.shuffle``).

- on the ``sched`` stream: :class:`RestartTasks` -- a worker found an exchange broken (a
  worker that owned output partitions is gone, with the pieces sent to it): its transfer
  tasks and its barrier run again, from whatever state they are in.
"""

from __future__ import annotations

from dataclasses import dataclass

from rdist.protocol.wire.base import NAME, NAMES, TEXT, Message, fields


@dataclass(slots=True)
class RestartTasks(Message):
    """Run ``keys`` again: those in memory, processing or erred are released and, when
    still needed, wait to run again (their dependents wait for them again)."""

    OP = "restart-tasks"
    worker: str
    keys: list[str]
    reason: str = ""


fields(RestartTasks, worker=NAME, keys=NAMES, reason=TEXT)

__all__ = ["RestartTasks"]
