"""Primitives, queued futures, datasets and plugins against real processes and SIGKILL
(issue 13): a killed lock holder frees the lock after its lease timeout, a frozen holder's
late release is refused, a queue of futures and a published dataset keep their values
through a scheduler SIGKILL and restart, and a worker plugin reaches a worker joining later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rdist import Client, Lock, Queue
from tests.extension_tasks import EnvMark, inc, read_mark
from tests.proc_cluster import ProcCluster

pytestmark = pytest.mark.real

LEASE = 1.0  #: seconds: the holders' lease timeout here (renewed while they live)

HOLDER = textwrap.dedent(
    """
    import sys
    from rdist import Client, Lock
    client = Client(sys.argv[1], cluster_name=sys.argv[2])
    lock = Lock("shared", lease_timeout=float(sys.argv[3]))
    assert lock.acquire(timeout=10)
    print("held", lock._leases[-1].token, flush=True)
    sys.stdin.readline()
    print("released", lock.release(), flush=True)
    """
)


@pytest.fixture
def procs(redis_server: Any) -> Iterator[ProcCluster]:
    cluster = ProcCluster(n_workers=1, redis=redis_server)
    try:
        cluster.wait_for_workers()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def holder(procs: ProcCluster) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, procs.url, procs.cluster, str(LEASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=procs.env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == ["held"], line
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_a_sigkilled_lock_holder_frees_the_lock_after_its_lease_timeout(procs, holder) -> None:
    with Client(procs.url, cluster_name=procs.cluster) as c:
        lock = Lock("shared", client=c, lease_timeout=LEASE)
        assert not lock.acquire(timeout=LEASE * 2)  # the holder renews while it lives

        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert lock.acquire(timeout=LEASE * 10)
        waited = time.monotonic() - killed

        assert waited < LEASE * 3, waited
        lock.release()


def test_a_frozen_holders_late_release_is_refused_and_frees_nothing(procs, holder) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    with Client(procs.url, cluster_name=procs.cluster) as c:
        os.kill(holder.pid, signal.SIGSTOP)  # no renewals: its lease lapses
        lock = Lock("shared", client=c, lease_timeout=30)
        assert lock.acquire(timeout=LEASE * 10)
        os.kill(holder.pid, signal.SIGCONT)

        holder.stdin.write("release\n")
        holder.stdin.flush()
        answer = holder.stdout.readline().split()

        assert answer == ["released", "False"], answer
        assert lock.locked()  # still ours
        assert not Lock("shared", client=c).acquire(blocking=False)
        lock.release()


def test_queued_futures_and_datasets_keep_their_values_through_a_scheduler_kill(procs) -> None:
    with Client(procs.url, cluster_name=procs.cluster) as putter:
        futures = [putter.submit(inc, i) for i in range(3)]
        putter.gather(futures)
        queue = Queue("results", client=putter)
        for future in futures:
            queue.put(future)
        putter.publish_dataset(first=futures[0])
        del futures

    procs.kill_scheduler()
    procs.start_scheduler()

    with Client(procs.url, cluster_name=procs.cluster, timeout=30) as reader:
        queue = Queue("results", client=reader)
        taken = [queue.get(timeout=20) for _ in range(3)]
        assert reader.gather(taken) == [1, 2, 3]
        assert reader.get_dataset("first").result(timeout=20) == 1


def test_a_worker_plugin_registered_before_a_worker_joins_is_set_up_on_it(procs) -> None:
    with Client(procs.url, cluster_name=procs.cluster) as c:
        c.register_plugin(EnvMark("joined-later"), name="mark")
        name = procs.start_worker()
        procs.wait_for_workers([name])
        address = procs.live_workers()[name]

        got = c.submit(read_mark, workers=[address], pure=False).result(timeout=20)

        assert got == "joined-later"
