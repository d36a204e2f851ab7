"""Reading what a previous scheduler left in Redis, for a new one to resume from.

The records go to the state machine as one :class:`~rdist.scheduler.events.StateRestored`
event (see :mod:`rdist.scheduler.recovery` for what it makes of them). A task record that
does not decode is logged and handed over as corrupt: its task errs naming it (it cannot
be recomputed), and so do the dependents still wanted, instead of waiting forever. With
the records go the function each stored spec names and the functions stored, so that the
``funcs`` hash is counted by reference again.
"""

from __future__ import annotations

import logging

from rdist.protocol import wire
from rdist.scheduler import events as ev
from rdist.store import RedisStore

log = logging.getLogger("rdist.scheduler")


def read_state(store: RedisStore, worker_ttl: float, now: float) -> ev.StateRestored | None:
    """The stored task records, live workers and stored errors; None when there is
    nothing at all."""
    records: dict[str, wire.TaskRecord] = {}
    corrupt: dict[str, str] = {}
    for key, record in store.tasks.all():
        if isinstance(record, wire.MalformedMessage):
            log.error("restore: the record of task %r is corrupt: %s", key, record)
            corrupt[key] = str(record)
            continue
        records[key] = record
    workers = {
        address: record
        for address, record in store.workers.all().items()
        if now - record.last_seen <= worker_ttl
    }
    spec_funcs = dict(store.specs.functions_named())
    stored_funcs = store.specs.function_hashes()
    if not (records or workers or corrupt or spec_funcs or stored_funcs):
        return None
    blamed = sorted({r.blame for r in records.values() if r.state == "erred" and r.blame})
    errors = {
        key: blob for key, blob in zip(blamed, store.results.get_many(blamed)) if blob is not None
    }
    return ev.StateRestored(
        f"restore-{now}",
        now,
        records,
        workers,
        errors,
        corrupt=corrupt,
        clients=sorted(store.clients.all()),
        spec_funcs=spec_funcs,
        stored_funcs=stored_funcs,
    )
