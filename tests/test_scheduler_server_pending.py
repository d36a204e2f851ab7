"""The scheduler's read loop recovers entries stranded in its pending list (fakeredis tier).

An entry delivered by a read whose reply never arrived (Redis restarting as it answered)
stays pending for the consumer and never comes from ">" again; the loop must look there.
"""

from __future__ import annotations

from rdist.protocol import wire
from rdist.scheduler import server as scheduler_server
from rdist.store.keys import PAYLOAD_FIELD, SCHEDULER_GROUP
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster


def test_an_entry_delivered_but_never_received_is_still_handled():
    with fake_cluster(n_workers=1) as (c, cluster):
        address = cluster.workers[0].address
        keys, redis = c.store.keys, c.store.redis
        # the worker's join must be handled first: the read below must take our entry only
        wait_until(lambda: address in cluster.scheduler.state.workers, what="the join handled")
        # deliver an entry to the scheduler's consumer as a lost reply would: in the
        # group's pending list, never seen by the scheduler's loop
        pipe = redis.pipeline(transaction=True)
        pipe.xadd(
            keys.sched,
            {PAYLOAD_FIELD: wire.WorkerStatus(address, "paused").encode()},
        )
        pipe.xreadgroup(SCHEDULER_GROUP, cluster.scheduler.consumer, {keys.sched: ">"}, count=1)
        _, delivered = pipe.execute()
        assert delivered, "the entry went to the scheduler first: try again"

        wait_until(
            lambda: cluster.scheduler.state.workers[address].status == "paused",
            timeout=3 * getattr(scheduler_server, "PENDING_CHECK_SECONDS", 2.0),
            what="the stranded entry was handled",
        )
        wait_until(
            lambda: redis.xpending(keys.sched, SCHEDULER_GROUP)["pending"] == 0,
            what="and acknowledged",
        )
