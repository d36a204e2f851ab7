"""Workers joining and leaving, as the scheduler's log tells an operator.

The state machine decides; this looks at a batch's events beside it: which of them are a
worker joining or leaving that the state did not know (or still knew) before the batch,
so a worker that announces itself again, or leaves twice, is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rdist.scheduler import events as ev

__all__ = ["Change", "changes", "log_changes"]


@dataclass(frozen=True, slots=True)
class Change:
    """One worker that joined (``joined``), left cleanly or was lost."""

    address: str
    joined: bool
    lost: bool = False
    name: str = ""
    nthreads: int = 0
    memory_limit: int = 0


def changes(state: Any, events: Sequence[ev.Event]) -> list[Change]:
    """The membership changes ``events`` bring to ``state`` (call before it handles them);
    ``state.workers`` is the table of known workers by address."""
    out: list[Change] = []
    known = state.workers
    for event in events:
        kind = type(event)
        if kind is ev.WorkerJoined:
            assert isinstance(event, ev.WorkerJoined)
            if event.address not in known:
                out.append(
                    Change(
                        event.address,
                        True,
                        name=event.name,
                        nthreads=event.nthreads,
                        memory_limit=event.memory_limit,
                    )
                )
        elif kind is ev.WorkerLeft:
            assert isinstance(event, ev.WorkerLeft)
            if event.address in known:
                out.append(Change(event.address, False, lost=event.lost))
    return out


def log_changes(log: logging.Logger, found: list[Change], n_workers: int) -> None:
    """One INFO line per change (a lost worker: WARNING), with the count after the batch."""
    for change in found:
        if change.joined:
            memory = f"{change.memory_limit >> 20} MiB" if change.memory_limit else "no limit"
            log.info(
                "worker %s (name %r, %d threads, memory %s) joined: %d workers",
                change.address,
                change.name,
                change.nthreads,
                memory,
                n_workers,
            )
        elif change.lost:
            log.warning("worker %s was lost: %d workers", change.address, n_workers)
        else:
            log.info("worker %s left: %d workers", change.address, n_workers)
