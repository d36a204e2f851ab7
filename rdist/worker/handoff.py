"""Graceful departure: before a worker leaves, results only it holds move to a peer.

Heroku gives a dyno 30 s between SIGTERM and SIGKILL; handing data over (rather than
letting the scheduler recompute it) makes a scale-down cheap. Results stored in Redis
need nothing: they survive the worker.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from rdist.comm.transfer import encode_items

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

#: Stop handing over after this long; what is left is recomputed from lineage if needed.
BUDGET_SECONDS = 20.0


def unique_keys(worker: Worker) -> list[str]:
    """Keys whose only copy, according to the scheduler's records, is on this worker."""
    keys = list(worker.data.keys())
    if not keys:
        return []
    records = worker.store.tasks.get_many(keys)
    return [
        key
        for key, record in records.items()
        if record.state == "memory" and not record.in_redis and record.who_has == [worker.address]
    ]


def peers(worker: Worker) -> list[str]:
    """Running workers other than this one, by address (a retired worker: only the peers
    it was told stay, never another retiring one)."""
    records = worker.store.workers.all()
    staying = worker.retired_for
    return sorted(
        a
        for a, r in records.items()
        if a != worker.address and r.status == "running" and (staying is None or a in staying)
    )


def hand_off(worker: Worker, budget: float = BUDGET_SECONDS) -> dict[str, list[str]]:
    """Copy unique results to peers (round robin); returns peer -> keys it now holds."""
    deadline = time.monotonic() + budget
    keys, targets = unique_keys(worker), peers(worker)
    moved: dict[str, list[str]] = {}
    if not keys or not targets:
        return moved
    for i, key in enumerate(keys):
        if time.monotonic() > deadline:
            log.warning(
                "worker %s: hand-off budget spent, %d keys left", worker.address, len(keys) - i
            )
            break
        value: Any = worker.data.get(key)
        for attempt in range(len(targets)):
            peer = targets[(i + attempt) % len(targets)]
            try:
                header, frames = encode_items({key: value})
                header["op"] = "put"
                worker.peers.request(peer, header, frames)
            except Exception as exc:  # a peer leaving too, or unreachable: try the next
                log.info(
                    "worker %s: hand-off of %s to %s failed: %s", worker.address, key, peer, exc
                )
                continue
            moved.setdefault(peer, []).append(key)
            break
    return moved
