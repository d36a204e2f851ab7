"""Lock, Semaphore and MultiLock leases against SIGKILL and SIGSTOP of their holder (real
tier, issue 13): a holder killed frees its leases after its lease timeout, and a frozen
holder whose lease lapsed has its late release refused -- it never frees a lease someone
else took meanwhile.
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

from rdist import Client, Lock, MultiLock, Semaphore
from tests.proc_cluster import ProcCluster

pytestmark = pytest.mark.real

LEASE = 1.0  #: seconds: the holder's lease timeout (renewed while it lives)

#: argv: url, cluster, lease timeout, kind ("lock": the lock "shared"; "semaphore": both
#: leases of a 2-lease semaphore; "multilock": the locks a and b together)
HOLDER = textwrap.dedent(
    """
    import sys
    from rdist import Client, Lock, MultiLock, Semaphore
    client = Client(sys.argv[1], cluster_name=sys.argv[2])
    lease = float(sys.argv[3])
    if sys.argv[4] == "lock":
        held = Lock("shared", lease_timeout=lease)
        assert held.acquire(timeout=10)
        release = lambda: [held.release()]
    elif sys.argv[4] == "semaphore":
        held = Semaphore(max_leases=2, name="sem", lease_timeout=lease)
        assert held.acquire(timeout=10) and held.acquire(timeout=10)
        release = lambda: [held.release(), held.release()]
    else:
        held = MultiLock(["a", "b"], lease_timeout=lease)
        assert held.acquire(timeout=10)
        release = lambda: [held.release()]
    print("held", flush=True)
    sys.stdin.readline()
    print("released", *release(), flush=True)
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


@pytest.fixture(params=["lock", "semaphore", "multilock"])
def holder(procs: ProcCluster, request: Any) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    kind = request.param
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, procs.url, procs.cluster, str(LEASE), kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=procs.env,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line == ["held"], line
        yield kind, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _contender(kind: str, client: Client, lease_timeout: float) -> Lock | Semaphore | MultiLock:
    """What the holder holds, as another client asks for it: the lock, one of the
    semaphore's leases, or the locks b and c (b is the holder's)."""
    if kind == "lock":
        return Lock("shared", client=client, lease_timeout=lease_timeout)
    if kind == "semaphore":
        return Semaphore(max_leases=2, name="sem", client=client, lease_timeout=lease_timeout)
    return MultiLock(["b", "c"], client=client, lease_timeout=lease_timeout)


def test_a_sigkilled_holder_frees_its_leases_after_the_lease_timeout(procs, holder) -> None:
    kind, proc = holder
    with Client(procs.url, cluster_name=procs.cluster) as c:
        wanted = _contender(kind, c, LEASE)
        assert not wanted.acquire(timeout=LEASE * 2)  # the holder renews while it lives

        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wanted.acquire(timeout=LEASE * 10)
        waited = time.monotonic() - killed

        assert waited < LEASE * 3, waited
        wanted.release()


def test_a_frozen_holders_late_release_is_refused_and_frees_nothing(procs, holder) -> None:
    kind, proc = holder
    assert proc.stdin is not None and proc.stdout is not None
    with Client(procs.url, cluster_name=procs.cluster) as c:
        os.kill(proc.pid, signal.SIGSTOP)  # no renewals: its leases lapse
        taken: Lock | Semaphore | MultiLock
        if kind == "lock":
            taken = Lock("shared", client=c, lease_timeout=30)
            assert taken.acquire(timeout=LEASE * 10)
        elif kind == "semaphore":  # both leases, so that a wrong release would show
            taken = Semaphore(max_leases=2, name="sem", client=c, lease_timeout=30)
            assert taken.acquire(timeout=LEASE * 10) and taken.acquire(timeout=LEASE * 10)
        else:
            taken = MultiLock(["a", "b"], client=c, lease_timeout=30)
            assert taken.acquire(timeout=LEASE * 10)
        os.kill(proc.pid, signal.SIGCONT)

        proc.stdin.write("release\n")
        proc.stdin.flush()
        answer = proc.stdout.readline().split()

        assert answer[0] == "released" and set(answer[1:]) == {"False"}, answer
        other = _contender(kind, c, 30)
        assert not other.acquire(blocking=False)  # what we took is still ours
        if kind == "semaphore":
            assert taken.get_value() == 2
            taken.release()
        taken.release()
        assert other.acquire(timeout=5)
        other.release()
