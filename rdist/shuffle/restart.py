"""Starting an exchange again when a worker it sent pieces to is gone.

The pieces sent to a lost worker are lost with it, and so may be the transfers that had
already sent theirs: only running every transfer again gives an exact result. The worker
that notices (a transfer that cannot reach an owner, an unpack that cannot fetch from
one, a barrier that sees transfers of an older run) starts the next run in Redis -- new
owners among the live workers, the lost one excluded -- and, if it was first to do so,
asks the scheduler to run the transfers and the barrier again (``RestartTasks``). The
noticing task then raises :class:`~rdist.exceptions.Reschedule`: it is placed again, after
the new run's barrier. No timeout is involved: a slow worker is only slow.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

from rdist.exceptions import Reschedule
from rdist.protocol import wire
from rdist.shuffle.plan import Exchange, assign_owners

#: the worker (``rdist.worker.server.Worker``): not imported, the client imports this package
Worker = Any

log = logging.getLogger("rdist.shuffle")


def owners_of(worker: Worker, plan: Exchange, run: int) -> tuple[str, ...]:
    """The owners of ``run`` (run 0: as submitted)."""
    if run == 0:
        return plan.owners
    current, owners = worker.store.exchanges.current(plan.id)
    if owners is None or current != run:  # a later run started meanwhile
        raise Reschedule()
    return tuple(owners)


def current_run(worker: Worker, plan: Exchange) -> tuple[int, tuple[str, ...]]:
    run, owners = worker.store.exchanges.current(plan.id)
    return (run, plan.owners) if owners is None else (run, tuple(owners))


def restart(worker: Worker, plan: Exchange, run: int, lost: set[str], reason: str) -> NoReturn:
    """Start run ``run + 1`` without the workers ``lost`` (unless another worker already
    did), then reschedule the calling task. Never returns."""
    live = [a for a in worker.store.workers.all() if a not in lost]
    if worker.store.exchanges.advance(plan.id, run, list(assign_owners(plan.npartitions, live))):
        log.warning(
            "shuffle %s: run %d broken (%s): starting run %d", plan.id, run, reason, run + 1
        )
        keys = [*plan.transfer_keys(), plan.barrier_key]
        message = wire.RestartTasks(worker.address, keys, reason)
        worker.store.streams.to_scheduler(message)
    raise Reschedule()
