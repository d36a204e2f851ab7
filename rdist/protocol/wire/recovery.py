"""Messages of the recovery after Redis lost data (see ``rdist.scheduler.reconcile``).

- on the ``sched`` stream: :class:`HeldKeys` -- a worker re-announces the results it
  holds, once it sees a new cluster epoch (``rdist.store.epoch``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rdist.protocol.wire.base import COUNT, NAME, DictOf, Message, fields


@dataclass(slots=True)
class HeldKeys(Message):
    """``worker`` holds these results: key -> nbytes."""

    OP = "held-keys"
    worker: str
    keys: dict[str, int]


fields(HeldKeys, worker=NAME, keys=DictOf(NAME, COUNT))

__all__ = ["HeldKeys"]
