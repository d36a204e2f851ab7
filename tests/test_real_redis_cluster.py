"""Redis Cluster: rdist works unchanged on three primaries (``--cluster-enabled yes``,
joined by ``redis-cli --cluster create``). Every key of one rdist cluster lives in the
slot of its ``{<cluster>}`` hash tag; two rdist clusters land on different nodes (issue
15, part 5)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from rdist import Client, LocalCluster, Lock, Queue, Variable
from rdist.store import connect
from rdist.store.keys import Keys
from tests.redis_topologies import RedisClusterSet

pytestmark = pytest.mark.timeout(240)


def inc(x: int) -> int:
    return x + 1


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterSet]:
    deployment = RedisClusterSet().start()
    try:
        yield deployment
    finally:
        deployment.stop()


def _names_on_two_nodes(deployment: RedisClusterSet) -> tuple[str, str]:
    """Two rdist cluster names whose hash tags hash to slots of different primaries."""
    first = f"rc-{uuid.uuid4().hex[:8]}"
    node = deployment.node_of(Keys(first).prefix)
    while True:
        other = f"rc-{uuid.uuid4().hex[:8]}"
        if deployment.node_of(Keys(other).prefix) != node:
            return first, other


def _local_cluster(url: str, name: str) -> LocalCluster:
    return LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        redis_url=url,
        name=name,
        timeout=30,
        nanny=False,
        dashboard_address=None,
    )


def test_two_rdist_clusters_run_graphs_side_by_side_each_in_its_own_slot(
    redis_cluster: RedisClusterSet,
) -> None:
    names = _names_on_two_nodes(redis_cluster)
    with (
        _local_cluster(redis_cluster.url, names[0]) as a,
        _local_cluster(redis_cluster.url, names[1]) as b,
        Client(a, timeout=30) as ca,
        Client(b, timeout=30) as cb,
    ):
        ca.wait_for_workers(2, timeout=30)
        cb.wait_for_workers(2, timeout=30)
        fa = ca.map(inc, range(300))
        fb = cb.map(inc, range(1000, 1300))
        ta, tb = ca.submit(sum, fa), cb.submit(sum, fb)
        big = ca.submit(lambda: b"x" * 200_000)  # moved worker to client, not in Redis

        assert ta.result(timeout=60) == sum(range(1, 301))
        assert tb.result(timeout=60) == sum(range(1001, 1301))
        assert len(big.result(timeout=60)) == 200_000

        for name in names:
            home = redis_cluster.node_of(Keys(name).prefix)
            pattern = f"rdist:{{{name}}}:*"
            assert redis_cluster.keys_on(home, pattern)  # the cluster's keys are here ...
            for port in redis_cluster.ports:  # ... and nowhere else
                if port != home:
                    assert redis_cluster.keys_on(port, pattern) == []


def test_scripts_transactions_and_blocking_reads_work_on_the_slot(
    redis_cluster: RedisClusterSet,
) -> None:
    name = f"rc-{uuid.uuid4().hex[:8]}"
    with _local_cluster(redis_cluster.url, name) as lc, Client(lc, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        lock = Lock("l", client=client)  # Lua scripts with fencing tokens
        assert lock.acquire(timeout=5)
        assert not Lock("l", client=client).acquire(timeout=0.2)
        lock.release()
        queue = Queue("q", maxsize=2, client=client)  # scripts + blocking list pops
        queue.put(1)
        queue.put(2)
        assert [queue.get(timeout=5), queue.get(timeout=5)] == [1, 2]
        Variable("v", client=client).set({"a": 1})  # a Lua compare-and-set
        assert Variable("v", client=client).get(timeout=5) == {"a": 1}
        client.set_metadata(["a", "b"], 3)  # a WATCH/MULTI transaction
        assert client.get_metadata(["a", "b"]) == 3


def test_the_store_refuses_nothing_of_the_slot_and_redis_refuses_other_slots(
    redis_cluster: RedisClusterSet,
) -> None:
    store = connect(redis_cluster.url, f"rc-{uuid.uuid4().hex[:8]}")
    try:
        store.check(10)
        pipe = store.pipeline()
        pipe.hset(store.keys.tasks, "k", b"v")
        pipe.xadd(store.keys.sched, {"m": b"x"})
        pipe.hget(store.keys.tasks, "k")
        assert pipe.execute()[-1] == b"v"
        # a key outside the hash tag is another slot: the node says so instead of
        # silently keeping it apart from the cluster's other keys
        home = redis_cluster.node_of(store.keys.prefix)
        foreign = next(f"k{i}" for i in range(100) if redis_cluster.node_of(f"k{i}") != home)
        with pytest.raises(redis.ConnectionError, match="slot moved"):
            store.redis.set(foreign, 1)
    finally:
        store.close()
