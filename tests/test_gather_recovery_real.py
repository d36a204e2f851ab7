"""``gather`` across a new cluster epoch, with real processes (real tier): Redis, a
scheduler and two workers as processes, the client in this process.

The epoch changes at the worst moment for a ``gather``: after its wait saw every future
finished, before it took their values. The client's listener then resets every future
and re-submits their graphs, the workers re-announce what they hold, and ``gather``
must still return every value in its place (it used to leave the reset futures out, so
future ``i`` got the value of future ``i + k``)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from rdist import Client, wait
from tests.proc_cluster import ProcCluster

pytestmark = pytest.mark.timeout(120)

N = 400


def shift(x: int) -> int:
    return x + 1000


@pytest.fixture
def procs(subprocess_pythonpath: None) -> Iterator[ProcCluster]:
    cluster = ProcCluster(n_workers=2, worker_ttl=10.0)
    try:
        cluster.wait_for_workers()
        yield cluster
    finally:
        cluster.close()


def test_gather_across_a_new_epoch_returns_every_value_in_its_place(
    procs: ProcCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(procs.url, cluster_name=procs.cluster, timeout=30) as client:
        client.wait_for_workers(2, timeout=30)
        futures = client.map(shift, range(N), pure=False)
        wait(futures, timeout=60)
        real_wait = client.ledger.wait_all
        changed: list[bool] = []

        def wait_then_new_epoch(states: Any, timeout: float | None) -> bool:
            done = real_wait(states, timeout)
            if not changed:  # Redis "fails over" now: a new epoch, seen by everyone
                changed.append(True)
                redis.Redis.from_url(procs.url).set(client.store.keys.epoch, secrets.token_hex(8))
                deadline = time.monotonic() + 30
                while client.recovery.rebuilds == 0 and time.monotonic() < deadline:
                    time.sleep(0.01)  # the listener resets every future (re-submits them)
            return done

        monkeypatch.setattr(client.ledger, "wait_all", wait_then_new_epoch)

        assert client.gather(futures) == [x + 1000 for x in range(N)]
        assert client.recovery.rebuilds == 1
        assert client.gather(futures[::3]) == [x + 1000 for x in range(0, N, 3)]
