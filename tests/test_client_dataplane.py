"""The data plane end to end on a fakeredis cluster: transfer modes, the Redis fallback,
addresses, replicate / rebalance, spilling, pausing (issue 3)."""

from __future__ import annotations

import gc
import socket
import uuid
from typing import Any

import numpy as np
import pytest

from rdist import get_worker
from rdist.protocol import messages
from rdist.worker.memory import MemoryFractions
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster, free_port

MB = 1_000_000


def make(n: int, fill: float = 1.0) -> np.ndarray:
    return np.full(n // 8, fill)


def total(*arrays: np.ndarray) -> tuple[float, str]:
    return float(sum(a.sum() for a in arrays)), get_worker().address


def transfer_keys(c: Any) -> list[bytes]:
    return c.store.redis.keys(c.store.keys.transfer("*"))


def served(worker: Any) -> int:
    return worker.dataplane.server.served


# -- transfer modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["p2p", "redis", "auto"])
def test_large_data_moves_in_every_transfer_mode(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RDIST_TRANSFER", mode)
    with fake_cluster() as (c, cluster):
        w0, w1 = cluster.workers
        a = c.submit(make, 2 * MB, 2.0, workers=[w0.address])
        b = c.submit(make, 3 * MB, 1.0, workers=[w1.address])

        assert c.submit(total, a, b, workers=[w1.address]).result(timeout=20) == (
            2 * MB / 8 * 2.0 + 3 * MB / 8,
            w1.address,
        )
        value = a.result(timeout=20)  # the client fetches from w0 by the same rule
        [scattered] = c.scatter([np.ones(MB)], workers=[w0.address])
        assert c.submit(total, scattered, workers=[w1.address]).result(timeout=20)[0] == MB

        np.testing.assert_array_equal(value, make(2 * MB, 2.0))
        assert value.flags.writeable
        through_peers = served(w0) + served(w1)
        assert (through_peers == 0) is (mode == "redis")
        assert transfer_keys(c) == []  # every chunk read and deleted


def test_auto_mode_falls_back_to_redis_for_a_worker_nobody_can_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RDIST_TRANSFER", "auto")
    monkeypatch.setenv("RDIST_UNIX_SOCKETS", "0")  # only the advertised TCP address exists
    with fake_cluster(n_workers=1) as (c, cluster):
        hidden = cluster.add_worker(name="hidden", contact_address=f"tcp://127.0.0.1:{free_port()}")
        c.wait_for_workers(2, timeout=10)
        [reachable] = cluster.workers[:1]
        assert hidden.address != hidden.server.address  # advertises an address nobody serves

        a = c.submit(make, 2 * MB, 3.0, workers=[hidden.address])
        s, where = c.submit(total, a, workers=[reachable.address]).result(timeout=30)
        value = a.result(timeout=30)

        assert (s, where) == (2 * MB / 8 * 3.0, reachable.address)
        np.testing.assert_array_equal(value, make(2 * MB, 3.0))
        assert served(hidden) == 0  # nothing went over its (unreachable) data server
        assert hidden.address in reachable.dataplane.gatherer.unreachable
        assert transfer_keys(c) == []
        wait_until(
            lambda: sorted(c.who_has([a])[a.key]) == sorted([hidden.address, reachable.address]),
            5,
            "the copy recorded",
        )


def test_p2p_mode_does_not_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDIST_TRANSFER", "p2p")
    monkeypatch.setenv("RDIST_UNIX_SOCKETS", "0")
    with fake_cluster(n_workers=1) as (c, cluster):
        hidden = cluster.add_worker(name="hidden", contact_address=f"tcp://127.0.0.1:{free_port()}")
        c.wait_for_workers(2, timeout=10)
        a = c.submit(make, 2 * MB, workers=[hidden.address])
        a.result  # noqa: B018
        from rdist.client.future import FINISHED

        wait_until(lambda: a.status == FINISHED, 10)
        found, missing = c._data.fetch([a.key], {a.key: [hidden.address]})
        assert found == {} and missing == [a.key]


def test_workers_can_talk_over_the_in_memory_transport() -> None:
    with fake_cluster(listen_address="inproc://") as (c, cluster):
        w0, w1 = cluster.workers
        assert w0.address.startswith("inproc://")
        a = c.submit(make, 2 * MB, workers=[w0.address])
        assert c.submit(total, a, workers=[w1.address]).result(timeout=20)[0] == 2 * MB / 8
        np.testing.assert_array_equal(a.result(timeout=20), make(2 * MB))


def test_worker_record_shows_advertised_address_and_transfer_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RDIST_TRANSFER", "redis")
    port = free_port()
    with fake_cluster(n_workers=0) as (c, cluster):
        worker = cluster.add_worker(
            name="nat", host="127.0.0.1", contact_address=f"tcp://{socket.gethostname()}:{port}"
        )
        c.wait_for_workers(1, timeout=10)
        info = c.scheduler_info()["workers"]
        assert list(info) == [f"tcp://{socket.gethostname()}:{port}"] == [worker.address]
        assert info[worker.address]["transfer"] == "redis"


# -- replicate, rebalance, who_has ---------------------------------------------------------------


def test_scatter_broadcast_puts_a_copy_on_every_worker(cluster_and_client: Any) -> None:
    c, cluster = cluster_and_client
    [f] = c.scatter([np.arange(100_000)], broadcast=True)

    assert sorted(c.who_has([f])[f.key]) == sorted(w.address for w in cluster.workers)
    assert all(f.key in w.data for w in cluster.workers)


def test_replicate_copies_to_n_workers_and_who_has_is_exact_at_once() -> None:
    with fake_cluster(n_workers=3) as (c, cluster):
        first = cluster.workers[0].address
        futures = [c.submit(make, MB, float(i), workers=[first], pure=False) for i in range(3)]

        c.replicate(futures, n=2)

        for f in futures:
            holders = c.who_has([f])[f.key]
            assert len(holders) == 2 and first in holders
            assert all(f.key in w.data for w in cluster.workers if w.address in holders)
        has_what = c.has_what()
        assert sum(len(keys) for keys in has_what.values()) == 6

        c.replicate(futures)  # n=None: every worker
        assert all(len(c.who_has([f])[f.key]) == 3 for f in futures)

        c.replicate(futures, n=1)  # fewer copies wanted: extras dropped, never the last
        assert all(len(c.who_has([f])[f.key]) == 1 for f in futures)
        wait_until(lambda: sum(f.key in w.data for w in cluster.workers for f in futures) == 3, 10)


def test_rebalance_evens_out_bytes_between_workers() -> None:
    with fake_cluster(n_workers=2) as (c, cluster):
        w0, w1 = cluster.workers
        futures = [c.submit(make, MB, float(i), workers=[w0.address], pure=False) for i in range(6)]
        c.gather(futures)
        assert len(c.has_what()[w0.address]) == 6

        c.rebalance(futures)

        has_what = c.has_what()
        assert len(has_what[w0.address]) == len(has_what[w1.address]) == 3
        assert all(len(c.who_has([f])[f.key]) == 1 for f in futures)
        wait_until(
            lambda: (
                sum(f.key in w1.data for f in futures) == 3
                and sum(f.key in w0.data for f in futures) == 3
            ),
            10,
        )
        assert [float(v[0]) for v in c.gather(futures)] == [float(i) for i in range(6)]


# -- memory ------------------------------------------------------------------------------


def test_spilled_data_still_counts_for_locality_and_comes_back(tmp_path: Any) -> None:
    with fake_cluster(n_workers=1) as (c, cluster):
        small = cluster.add_worker(
            name="small",
            memory_limit=4 * MB,
            spill_directory=str(tmp_path),
            memory_fractions=MemoryFractions(0.5, 0, 0, 0),
        )
        c.wait_for_workers(2, timeout=10)
        arrays = [
            c.submit(make, MB, float(i), workers=[small.address], pure=False) for i in range(5)
        ]
        c.gather(arrays)  # (gather fetches spilled ones from disk, without unspilling them)
        assert small.data.slow, "nothing spilled"
        spilled = next(f for f in arrays if f.key in small.data.slow)

        s, where = c.submit(total, spilled, *arrays[-1:]).result(timeout=20)

        assert where == small.address  # it holds all the input bytes, on disk or not
        assert s == MB / 8 * (float(arrays.index(spilled)) + 4.0)
        wait_until(
            lambda: (
                messages.unpack(c.store.redis.hget(c.store.keys.workers, small.address)).get(
                    "spilled_bytes", 0
                )
                > 0
            ),
            5,
        )
        record = messages.unpack(c.store.redis.hget(c.store.keys.workers, small.address))
        assert record["stored_bytes"] <= 2 * MB + 10_000
    assert not list(tmp_path.iterdir()) or not any(p.iterdir() for p in tmp_path.iterdir())


def test_a_paused_worker_gets_no_tasks_until_memory_drops() -> None:
    with fake_cluster(n_workers=2) as (c, cluster):
        w0, w1 = cluster.workers
        w0.memory_limit = w0.monitor.limit = 1000
        w0.monitor.rss = lambda: 900  # past the pause fraction (0.8)
        w0.monitor.check()
        wait_until(lambda: cluster.scheduler.state.workers[w0.address].status == "paused", 5)
        assert c.scheduler_info()["workers"][w0.address]["status"] == "paused"

        where = c.gather(c.map(lambda i: get_worker().address, range(6), pure=False))
        assert set(where) == {w1.address}

        w0.monitor.rss = lambda: 100
        w0.monitor.check()
        wait_until(lambda: cluster.scheduler.state.workers[w0.address].status == "running", 5)
        pinned = c.submit(lambda: get_worker().address, workers=[w0.address], pure=False)
        assert pinned.result(timeout=10) == w0.address
        del pinned
        gc.collect()


# -- the Redis relay --------------------------------------------------------------------------


def test_relay_writes_chunks_with_a_ttl_and_deletes_them_once_read() -> None:
    from rdist.comm.relay import CHUNK_BYTES, RedisRelay, Replies
    from rdist.protocol import serialize
    from rdist.store import connect

    store = connect(f"fakeredis://{uuid.uuid4().hex}", "relay")
    relay = RedisRelay(store, ("c", "me"), Replies())
    value = np.random.default_rng(1).random(int(2.5 * CHUNK_BYTES) // 8)  # incompressible

    relay.write("req", {"k": serialize.dumps(value)})

    name = store.keys.transfer("req", "k")
    fields = store.redis.hkeys(name)
    assert b"m" in fields and len(fields) >= 4  # the meta field and 3 chunks of the array
    assert 0 < store.redis.ttl(name) <= 120
    [(key, frames)] = relay.read("req", ["k"]).items()
    got = serialize.loads(frames)
    np.testing.assert_array_equal(got, value)
    assert got.flags.writeable and not store.redis.exists(name)
    with pytest.raises(ConnectionError, match="expired"):
        relay.read("req", ["k"])
    store.close()


def test_malformed_data_plane_messages_are_set_aside() -> None:
    from rdist.protocol.messages import MalformedMessage
    from rdist.worker.server import check_message

    check_message({"op": "publish", "id": "r", "keys": ["a"], "to": ["w", "tcp://x:1"]})
    for bad in [
        {"op": "publish", "id": "r", "keys": "a", "to": ["w", "x"]},
        {"op": "load", "id": "r", "keys": [], "to": ["z", "x"]},
        {"op": "published"},
        {"op": "gather-keys", "id": "r", "keys": ["not", "a", "map"], "to": ["c", "x"]},
    ]:
        with pytest.raises(MalformedMessage):
            check_message(bad)
