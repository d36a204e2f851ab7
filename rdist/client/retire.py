"""``client.retire_workers`` and ``client.shutdown``: workers leave without losing data.

Retiring, in the order that loses nothing:

1. the scheduler is told (``retire-workers``): those workers are ``closing`` and get no
   new task, so no new result appears there unseen;
2. the scheduler's Active Memory Manager runs the RetireWorker policy of each of them
   (dask's, :mod:`rdist.scheduler.amm`): a result also held by a worker that stays is
   dropped from the retiring one, a result held only by retiring workers (and not in
   Redis) is copied to the running worker with the least memory in use, through the
   data plane's ``gather-keys`` (what ``replicate`` uses); the client asks again
   (``amm`` ``retire`` requests, each answered with the scheduler's records up to date)
   until every retiring worker holds nothing that would be lost -- or some result has no
   running worker to go to (all paused), when nothing is retired, as in dask;
3. each retiring worker is told to ``retire``: what it still holds alone (a task that
   finished meanwhile) goes to the staying peers, it leaves cleanly (the scheduler runs
   its queued tasks elsewhere), and it exits with ``EXIT_RETIRED``, so its nanny does not
   start a new worker;
4. we wait until they are gone from the ``workers`` hash, and a last barrier makes the
   scheduler's records (``who_has``) forget them.

``workers=None`` retires what :func:`rdist.adaptive.workers_to_close` finds idle and
cheap, as dask does. A worker whose data has nowhere to go (no worker stays) is not
retired. ``close_workers=False, remove=False`` stops after step 2: the workers stay,
closing (no new task), with their data copied -- dask's "drain" form.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any

from rdist import adaptive
from rdist.client.amm import request as amm_request
from rdist.client.introspection import running_workers, task_records
from rdist.client.options import worker_list
from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.client.client import Client

log = logging.getLogger("rdist.client")

#: How long retire_workers waits for the retired workers to leave, by default.
LEAVE_TIMEOUT = 60.0
#: How long it waits for their data to move (then each hands off what it still holds
#: alone itself, as it leaves).
MOVE_TIMEOUT = 300.0
#: Pauses between two asks whether the data moved: short first (little data moves fast).
POLL_SECONDS = (0.01, 0.02, 0.05, 0.1, 0.2)


def resolve(client: Client, workers: Any) -> list[str]:
    """The addresses of the present workers named by ``workers`` (addresses or names)."""
    present = running_workers(client.store)
    wanted = worker_list(workers) or []
    return sorted(a for a, w in present.items() if a in wanted or w.name in wanted)


def load_of(client: Client) -> adaptive.Load:
    """The adaptive rule's view of the workers, from the scheduler's records."""
    present = running_workers(client.store)
    processing: dict[str, int] = {a: 0 for a in present}
    held: dict[str, int] = {a: 0 for a in present}
    for record in task_records(client.store, None).values():
        if record.state == "processing" and record.processing_on in processing:
            processing[record.processing_on] += 1
        elif record.state == "memory":
            for address in record.who_has:
                if address in held:
                    held[address] += record.nbytes
    workers = tuple(
        adaptive.WorkerLoad(a, w.nthreads, w.memory_limit, held[a], processing[a])
        for a, w in sorted(present.items())
    )
    return adaptive.Load(workers=workers)


def retire_workers(
    client: Client,
    workers: Any = None,
    close_workers: bool = True,
    remove: bool = True,
    timeout: float | None = None,
) -> dict[str, dict[str, Any]]:
    """See :meth:`rdist.Client.retire_workers`; returns address -> worker info of the
    workers retired."""
    present = running_workers(client.store)
    if workers is None:
        targets = adaptive.workers_to_close(load_of(client))
    else:
        targets = resolve(client, workers)
    staying = sorted(a for a in present if a not in targets)
    if not targets:
        return {}
    leaving = set(targets)
    client._sender.post(wire.RetireWorkers(client.id, targets))
    client._data.barrier()  # closing from here on: no new task lands on them
    if not staying and _unique_keys(task_records(client.store, None), leaving):
        log.warning(
            "retire_workers: no worker would stay to take the data of %s; not retiring them",
            targets,
        )
        return {}
    if not _move_data(client, targets, MOVE_TIMEOUT if timeout is None else timeout):
        log.warning(
            "retire_workers: no running worker can take the data of %s (all paused or "
            "closing); not retiring them",
            targets,
        )
        return {}
    info = {a: present[a].to_wire() for a in targets}
    if not close_workers and not remove:
        return info
    _tell(client, targets, wire.Retire(staying))
    _wait_gone(client, leaving, LEAVE_TIMEOUT if timeout is None else timeout)
    # a worker leaves the hash right after queueing its worker-leave: once the scheduler
    # answers a barrier sent now, its records no longer name the retired workers
    client._data.barrier()
    return info


def shutdown(client: Client) -> None:
    """Stop every worker of the cluster (no nanny replaces them) and the scheduler."""
    workers = sorted(client.store.workers.all())
    _tell(client, workers, wire.Retire([]))
    client._sender.post(wire.Shutdown(client.id))
    client._sender.flush()


def _unique_keys(records: dict[str, wire.TaskRecord], leaving: set[str]) -> list[str]:
    return [
        k
        for k, r in records.items()
        if r.state == "memory" and not r.in_redis and r.who_has and set(r.who_has) <= leaving
    ]


def _move_data(client: Client, targets: list[str], timeout: float) -> bool:
    """Until the RetireWorker policies of ``targets`` are done (True), or find a result
    with nowhere to go (False); after ``timeout`` the workers' own hand-off takes over."""
    deadline = time.monotonic() + timeout
    for n in itertools.count():
        reply = amm_request(client, "retire", targets)
        if reply.done:
            return True
        if reply.no_recipients:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            log.warning("retire_workers: the data of %s did not move within %g s", targets, timeout)
            return True
        client._stop.wait(min(remaining, POLL_SECONDS[min(n, len(POLL_SECONDS) - 1)]))
    return True  # pragma: no cover - the loop only returns


def _tell(client: Client, addresses: list[str], msg: wire.Message) -> None:
    if not addresses:
        return
    pipe = client.store.pipeline()
    for address in addresses:
        client.store.streams.to_worker(address, msg, pipe)
    pipe.execute()


def _wait_gone(client: Client, leaving: set[str], timeout: float) -> None:
    """Until none of ``leaving`` is in the ``workers`` hash, woken by cluster events."""
    deadline = time.monotonic() + timeout
    store = client.store
    reader = store.clone()
    last: bytes | str = "$"
    try:
        while leaving & set(store.workers.all()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"retire_workers: {sorted(leaving & set(store.workers.all()))} did not "
                    f"leave within {timeout} s"
                )
            got = reader.read(store.keys.events, last, 100, int(1000 * min(0.5, remaining)) or 1)
            if got:
                last = got[-1][0]
            elif reader.url.startswith("fakeredis://"):
                time.sleep(0.01)  # fakeredis answers a blocking read at once
    finally:
        reader.close()
