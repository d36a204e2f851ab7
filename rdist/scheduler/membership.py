"""Workers joining and leaving, as the scheduler's log tells an operator.

The state machine decides; this looks at a batch's events beside it: which of them are a
worker joining that was not announced yet, or leaving while it was known, so a worker
that announces itself again, or leaves twice, is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence
from dataclasses import dataclass

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


def changes(known: Container[str], announced: set[str], events: Sequence[ev.Event]) -> list[Change]:
    """The membership changes ``events`` bring (call before the state handles them):
    ``known``, the state's workers; ``announced``, the workers whose joining was logged,
    kept up to date here. A worker restored from Redis is known but not announced: its
    joining message, when it comes, is still news."""
    out: list[Change] = []
    for event in events:
        kind = type(event)
        if kind is ev.WorkerJoined:
            assert isinstance(event, ev.WorkerJoined)
            if event.address not in announced:
                announced.add(event.address)
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
            if event.address in known or event.address in announced:
                announced.discard(event.address)
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
