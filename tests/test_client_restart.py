"""client.restart() on the fakeredis tier (CONTRACT item 29)."""

from __future__ import annotations

import threading
import time

import pytest

from rdist import CancelledError
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster

gate = threading.Event()


def wait_for_gate(x: int) -> int:
    gate.wait(30)
    return x


def inc(x: int) -> int:
    return x + 1


def test_restart_cancels_every_future_and_returns_while_a_task_sleeps() -> None:
    gate.clear()
    with fake_cluster() as (client, cluster):
        try:
            other = type(client)(cluster)
            stuck = client.submit(wait_for_gate, 1)
            done = client.submit(inc, 1)
            theirs = other.submit(inc, 100)
            assert done.result(timeout=10) == 2 and theirs.result(timeout=10) == 101
            started = time.monotonic()
            client.restart(timeout=10)
            assert time.monotonic() - started < 5
            # this client's futures are cancelled when restart() returns; another client
            # hears of the restart on its own stream, a moment later
            assert stuck.cancelled() and done.cancelled()
            wait_until(theirs.cancelled, 5, "the other client's future cancelled")
            with pytest.raises(CancelledError):
                stuck.result(timeout=1)
            assert cluster.scheduler.state.tasks == {}
            assert all(not w.data for w in cluster.workers)
            gate.set()  # without a nanny the abandoned task keeps its thread until it ends
            assert client.submit(inc, 41).result(timeout=10) == 42  # the cluster carries on
            other.close()
        finally:
            gate.set()
