"""Worker, scheduler, client and Redis faults on real processes (issue 4).

Workers heartbeat every second and the scheduler here declares a silent worker dead after
2 s (``RDIST_WORKER_TTL``); kills are SIGKILL unless a test says otherwise.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdist import Client, KilledWorker
from rdist.protocol import wire
from rdist.store import connect
from tests import resilience_tasks as rt
from tests.proc_cluster import ROOT, ProcCluster

pytestmark = pytest.mark.real


@pytest.fixture
def procs(redis_server: Any) -> Iterator[ProcCluster]:
    cluster = ProcCluster(n_workers=2, redis=redis_server)
    try:
        cluster.wait_for_workers()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def client(procs: ProcCluster) -> Iterator[Client]:
    with Client(procs.url, cluster_name=procs.cluster) as c:
        c.wait_for_workers(2, timeout=20)
        yield c


def _worker_running(procs: ProcCluster, key: str, timeout: float = 10) -> str:
    """Name of the worker a task is processing on, from the scheduler's record."""
    store = connect(procs.url, procs.cluster)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            blob = store.redis.hget(store.keys.tasks, key)
            if blob is not None:
                record = wire.unpack(blob, "tasks")
                if record.get("s") == "processing":
                    names = {a: n for n, a in procs.live_workers().items()}
                    return names[record["on"]]
            time.sleep(0.02)
    finally:
        store.close()
    raise TimeoutError(f"{key} never started processing")


def test_task_on_a_killed_worker_runs_elsewhere(procs: ProcCluster, client: Client) -> None:
    future = client.submit(rt.where, 3.0, pure=False)
    victim = _worker_running(procs, future.key)
    survivor = next(n for n in procs.workers if n != victim)
    survivor_pid = client.run(os.getpid, workers=[procs.live_workers()[survivor]])
    procs.kill_worker(victim)
    assert future.result(timeout=30) in survivor_pid.values()


def test_result_held_only_by_a_dead_worker_is_recomputed(
    procs: ProcCluster, client: Client, tmp_path: Path
) -> None:
    marker = str(tmp_path / "runs")
    big = client.submit(rt.big_counted, marker)
    assert len(big.result(timeout=20)) == 200_000
    holder = {a: n for n, a in procs.live_workers().items()}[client.who_has([big])[big.key][0]]
    procs.kill_worker(holder)
    total = client.submit(len, big)
    assert total.result(timeout=30) == 200_000
    assert rt.executions(marker) == 2
    assert len(big.result(timeout=30)) == 200_000  # the future went back to pending, not error


def test_task_that_kills_every_worker_errs_with_killed_worker(
    redis_server: Any, tmp_path: Path
) -> None:
    procs = ProcCluster(n_workers=4, redis=redis_server)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster) as c:
            c.wait_for_workers(4, timeout=20)
            bad = c.submit(rt.die, str(tmp_path / "deaths"))
            with pytest.raises(KilledWorker) as info:
                bad.result(timeout=60)
            assert bad.key in str(info.value)
            assert rt.executions(str(tmp_path / "deaths")) == 3
            assert c.submit(rt.slow_inc, 1).result(timeout=20) == 2  # the survivor carries on
    finally:
        procs.close()


def test_scheduler_killed_mid_graph_resumes_after_restart(
    procs: ProcCluster, client: Client
) -> None:
    xs = client.map(rt.slow_inc, range(60), delay=0.05)
    total = client.submit(rt.add, *xs)
    time.sleep(0.5)
    procs.kill_scheduler()
    time.sleep(0.5)
    started = time.monotonic()
    procs.start_scheduler()
    assert total.result(timeout=60) == sum(range(1, 61))
    assert client.gather(xs) == list(range(1, 61))
    assert time.monotonic() - started < 30


def test_standby_scheduler_takes_over_when_the_leader_dies(
    procs: ProcCluster, client: Client
) -> None:
    procs.start_scheduler()  # a standby: the lease is held by the first one
    assert client.submit(rt.slow_inc, 1).result(timeout=20) == 2
    leader = procs.schedulers[0]
    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait(10)
    procs.schedulers.remove(leader)
    assert client.submit(rt.slow_inc, 41).result(timeout=30) == 42


def test_redis_restart_loses_no_work(tmp_path: Path) -> None:
    procs = ProcCluster(n_workers=2, persistence=True)
    try:
        procs.wait_for_workers()
        with Client(procs.url, cluster_name=procs.cluster) as c:
            c.wait_for_workers(2, timeout=20)
            xs = c.map(rt.slow_inc, range(40), delay=0.05)
            time.sleep(0.3)
            procs.redis.restart()
            ys = c.map(rt.slow_inc, range(100, 110))
            assert c.gather(xs) == list(range(1, 41))
            assert c.gather(ys) == list(range(101, 111))
    finally:
        procs.close()


CLIENT_SCRIPT = """
import sys, time
from rdist import Client
from tests import resilience_tasks as rt
c = Client(sys.argv[1], cluster_name=sys.argv[2])
f = c.submit(rt.slow_inc, 123)
f.result(timeout=30)
print(f.key, flush=True)
time.sleep(600)
"""


def test_keys_of_a_vanished_client_are_released(redis_server: Any) -> None:
    os.environ["RDIST_CLIENT_TTL"] = "2"
    try:
        procs = ProcCluster(n_workers=1, redis=redis_server)
    finally:
        del os.environ["RDIST_CLIENT_TTL"]
    try:
        procs.wait_for_workers()
        env = {**procs.env, "PYTHONPATH": str(ROOT)}
        child = subprocess.Popen(
            [sys.executable, "-c", CLIENT_SCRIPT, procs.url, procs.cluster],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            key = child.stdout.readline().decode().strip()  # type: ignore[union-attr]
            store = connect(procs.url, procs.cluster)
            assert store.redis.hexists(store.keys.tasks, key)
            child.kill()
            deadline = time.monotonic() + 20
            while store.redis.hexists(store.keys.tasks, key) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not store.redis.hexists(store.keys.tasks, key)
            store.close()
        finally:
            child.kill()
            child.wait()
            child.stdout.close()  # type: ignore[union-attr]
    finally:
        procs.close()


def test_sigterm_hands_unique_data_to_a_peer(
    procs: ProcCluster, client: Client, tmp_path: Path
) -> None:
    marker = str(tmp_path / "runs")
    names = procs.live_workers()
    big = client.submit(rt.big_counted, marker, workers=[names["w1"]])
    assert len(big.result(timeout=20)) == 200_000
    procs.kill_worker("w1", signal.SIGTERM)
    deadline = time.monotonic() + 20
    while client.who_has([big])[big.key] != [names["w2"]] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.who_has([big])[big.key] == [names["w2"]]
    assert client.submit(len, big).result(timeout=20) == 200_000
    assert rt.executions(marker) == 1  # handed over, not recomputed


def test_restart_replaces_worker_processes_promptly_while_a_task_sleeps(redis_url: str) -> None:
    from rdist import CancelledError, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            redis_url=redis_url,
            nanny=True,
            name=f"restart-{os.getpid()}-{time.monotonic_ns()}",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(2, timeout=30)
        before = set(client.run(os.getpid).values())
        sleeper = client.submit(rt.slow_inc, 1, 60.0)
        done = client.submit(rt.slow_inc, 2)
        assert done.result(timeout=20) == 3
        started = time.monotonic()
        client.restart(timeout=30)
        assert time.monotonic() - started < 15
        assert sleeper.cancelled() and done.cancelled()
        with pytest.raises(CancelledError):
            sleeper.result(timeout=1)
        after = set(client.run(os.getpid).values())
        assert len(after) == 2 and not after & before  # fresh processes
        assert client.submit(rt.slow_inc, 41).result(timeout=20) == 42
