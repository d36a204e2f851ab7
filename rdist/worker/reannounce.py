"""A worker's part in rebuilding the truth after Redis lost data.

Its heartbeat reads the cluster epoch (``rdist.store.epoch``); when a new one appears the
worker joins again -- its stream's consumer group, its record, the cluster secret its
peers authenticate with -- and re-announces every result it holds, with its size, in
:class:`~rdist.protocol.wire.HeldKeys` messages: the scheduler reconciles them with the
graphs clients re-submit (``rdist.scheduler.reconcile``). Tasks running here report when
they finish, as always. Nothing is dropped: the data stays where it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.keys import WORKER_GROUP

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

#: Keys per HeldKeys message (a worker may hold hundreds of thousands).
KEYS_PER_MESSAGE = 5000


def redis_lost(worker: Worker, store: RedisStore) -> bool:
    """Whether the epoch is missing or not the one this worker saw: then a lost consumer
    group means Redis lost data, not that the scheduler removed us."""
    current = store.epoch.current()
    seen = worker.epoch_watch.seen
    return current is None or (seen is not None and current != seen)


def reannounce(worker: Worker, store: RedisStore) -> None:
    """Join again and tell the scheduler every result held here (one round trip)."""
    from rdist.worker import heartbeats

    with worker.lock:
        held = {key: int(worker.nbytes.get(key, 0)) for key in worker.state.have}
    store.ensure_group(worker.stream, WORKER_GROUP, start="0")
    store.meta.restore_secret(worker.secret)
    pipe = store.pipeline()
    store.streams.to_scheduler(worker.info(), pipe)
    store.workers.put(heartbeats.record(worker), pipe)
    keys = sorted(held)
    for start in range(0, len(keys), KEYS_PER_MESSAGE):
        chunk = {key: held[key] for key in keys[start : start + KEYS_PER_MESSAGE]}
        store.streams.to_scheduler(wire.HeldKeys(worker.address, chunk), pipe)
    pipe.execute()
    log.warning(
        "worker %s: redis lost data (new cluster epoch): joined again, re-announced %d keys",
        worker.address,
        len(held),
    )
