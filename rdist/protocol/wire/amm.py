"""Messages of the Active Memory Manager (``client.amm``, and ``retire_workers`` using it).

- on the ``sched`` stream: :class:`AmmRequest` -- ``start``, ``stop``, ``running``,
  ``run_once`` (dask's ``AMMClientProxy`` calls), or ``retire``: run the RetireWorker
  policies of ``workers`` (closing workers) once and say whether they may leave;
- on the client's stream: :class:`AmmReply`, the answer (sent with the writes of the run,
  so the scheduler's records show its drops when the client reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdist.protocol.wire.base import BOOL, NAME, NAMES, Message, OneOf, fields

#: what an :class:`AmmRequest` may ask
AMM_OPS = ("start", "stop", "running", "run_once", "retire")


@dataclass(slots=True)
class AmmRequest(Message):
    """``client.amm.<action>()`` (or ``retire_workers``), answered by :class:`AmmReply` ``id``."""

    OP = "amm"
    client: str
    id: str
    action: str
    workers: list[str] = field(default_factory=list)  #: for ``retire``: who is leaving


fields(AmmRequest, client=NAME, id=NAME, action=OneOf(*AMM_OPS), workers=NAMES)


@dataclass(slots=True)
class AmmReply(Message):
    """Whether the manager runs on its own now; for ``retire``: whether every worker asked
    of holds nothing that would be lost (``done``), and whether some key had no running
    worker to go to (``no_recipients``: every other worker is paused or closing)."""

    OP = "amm-reply"
    id: str
    running: bool
    done: bool = True
    no_recipients: bool = False


fields(AmmReply, id=NAME, running=BOOL, done=BOOL, no_recipients=BOOL)

__all__ = ["AMM_OPS", "AmmReply", "AmmRequest"]
