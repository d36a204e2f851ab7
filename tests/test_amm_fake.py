"""``client.amm`` on a fakeredis cluster: start, stop, running, run_once; retire_workers
moving data through the RetireWorker policy."""

from __future__ import annotations

import asyncio
import time

import pytest

from rdist import Client
from rdist.protocol import wire
from tests.conftest import fake_cluster

LARGE = 100_000


def large(i: int) -> bytes:
    return bytes([i % 256]) * LARGE


def copies(c: Client, futures: list) -> int:
    return sum(len(holders) for holders in c.who_has(futures).values())


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_run_once_drops_the_copies_replicate_made_and_keeps_every_value():
    with fake_cluster(n_workers=3) as (c, cluster):
        futures = c.map(large, range(6))
        c.gather(futures)
        c.replicate(futures)
        assert copies(c, futures) == 18
        assert c.amm.running() is False  # (amm.start is off by default)

        assert c.amm.run_once() is None

        assert copies(c, futures) == 6  # who_has is exact when run_once returns
        wait_until(
            lambda: sum(len(set(w.data) & {f.key for f in futures}) for w in cluster.workers) == 6
        )
        assert c.gather(futures) == [large(i) for i in range(6)]


def test_start_runs_the_manager_on_its_own_until_stop():
    with fake_cluster(n_workers=2) as (c, cluster):
        cluster.scheduler.amm.interval = 0.05
        a = c.submit(large, 1)
        a.result(timeout=10)
        c.replicate([a])
        assert copies(c, [a]) == 2

        assert c.amm.start() is None
        assert c.amm.running() is True
        wait_until(lambda: copies(c, [a]) == 1)

        assert c.amm.stop() is None
        assert c.amm.running() is False
        c.replicate([a])
        time.sleep(1.2)  # many intervals (and two blocking reads): a started manager drops it
        assert copies(c, [a]) == 2
        assert a.result(timeout=10) == large(1)


def test_run_once_keeps_the_copy_a_processing_dependent_needs():
    with fake_cluster(n_workers=2) as (c, cluster):
        a, b = (w.address for w in cluster.workers)
        x = c.submit(large, 1, workers=[a])
        x.result(timeout=10)
        c.replicate([x])
        gate = c.submit(time.sleep, 0.5, workers=[b], pure=False)
        dependent = c.submit(lambda _, v: len(v), gate, x, workers=[b])
        c.amm.run_once()  # the dependent waits for gate: it keeps a copy of x for itself

        assert dependent.result(timeout=10) == LARGE


def test_async_client_awaits_the_proxy():
    with fake_cluster(n_workers=2) as (c, cluster):

        async def main() -> tuple[object, object]:
            ac = await Client(cluster, asynchronous=True, set_as_default=False)
            try:
                await ac.amm.start()
                running = await ac.amm.running()
                await ac.amm.stop()
                return running, await ac.amm.running()
            finally:
                await ac.close()

        assert asyncio.run(main()) == (True, False)


def test_retire_drain_copies_unique_data_before_the_worker_is_told_to_leave():
    with fake_cluster(n_workers=3) as (c, cluster):
        victim = cluster.workers[0].address
        futures = c.map(large, range(9), workers=[victim])
        c.gather(futures)

        # the drain form stops after moving the data: no hand-off by the worker itself
        retired = c.retire_workers([victim], close_workers=False, remove=False)

        assert set(retired) == {victim}
        who_has = c.who_has(futures)
        staying = {w.address for w in cluster.workers[1:]}
        assert all(set(holders) & staying for holders in who_has.values())
        spread = {w for holders in who_has.values() for w in holders if w in staying}
        assert spread == staying  # the emptiest worker takes each next key
        assert c.gather(futures) == [large(i) for i in range(9)]


def test_amm_request_for_an_unknown_action_is_refused_by_the_wire():
    with pytest.raises(wire.MalformedMessage, match="action"):
        wire.SCHEDULER.decode(wire.pack({"op": "amm", "client": "c", "id": "1", "action": "x"}))


def test_a_request_bundled_with_other_messages_of_its_client_is_answered():
    with fake_cluster(n_workers=1) as (c, cluster):
        future = c.submit(large, 1)
        future.result(timeout=10)
        sender = c._sender
        with sender._sending:  # nothing goes out meanwhile: the two leave as one entry
            sender.post(wire.ReleaseKeys(c.id, [future.key]))
            request_id = c._answers.expect()
            sender.post(wire.AmmRequest(c.id, request_id, "running", []))
        sender.flush()

        reply = c._answers.one(request_id, 10)
        assert reply.running is False
        assert cluster.scheduler.guard.refused == 0  # nothing set aside
