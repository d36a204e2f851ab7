"""Reading what a previous scheduler left in Redis, for a new one to resume from.

The records go to the state machine as one :class:`~rdist.scheduler.events.StateRestored`
event (see :mod:`rdist.scheduler.recovery` for what it makes of them). A task record that
does not decode is skipped and logged: its key is unknown to the new scheduler, so a
dependent still wanted errs naming it instead of waiting for it forever.
"""

from __future__ import annotations

import logging

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.store import RedisStore

log = logging.getLogger("rdist.scheduler")


def read_state(store: RedisStore, worker_ttl: float, now: float) -> ev.StateRestored | None:
    """The stored task records, live workers and stored errors; None when there are none."""
    records: dict[str, wire.TaskRecord] = {}
    for key, record in store.tasks.all():
        if isinstance(record, wire.MalformedMessage):
            log.error("restore: skipping the corrupt record of task %r: %s", key, record)
            continue
        records[key] = record
    workers = {
        address: record
        for address, record in store.workers.all().items()
        if now - record.last_seen <= worker_ttl
    }
    if not records and not workers:
        return None
    blamed = sorted({r.blame for r in records.values() if r.state == "erred" and r.blame})
    errors = {
        key: blob for key, blob in zip(blamed, store.results.get_many(blamed)) if blob is not None
    }
    return ev.StateRestored(f"restore-{now}", now, records, workers, errors)
