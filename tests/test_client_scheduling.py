"""Scheduling policy through a whole fakeredis cluster: resources, long-running tasks
(secede / worker_client), work stealing, balance."""

from __future__ import annotations

import threading
import time

import pytest

from rdist import get_client, rejoin, secede, wait, worker_client
from tests.client_helpers import calls, count_call, token, wait_until
from tests.conftest import fake_cluster

_RUNNING: dict[str, int] = {}
_PEAK: dict[str, int] = {}
_LOCK = threading.Lock()


def track(name: str, seconds: float = 0.05) -> str:
    """Count concurrent runs of ``name`` (and the peak) while sleeping a little."""
    from rdist import get_worker

    with _LOCK:
        _RUNNING[name] = _RUNNING.get(name, 0) + 1
        _PEAK[name] = max(_PEAK.get(name, 0), _RUNNING[name])
    time.sleep(seconds)
    with _LOCK:
        _RUNNING[name] -= 1
    return get_worker().name


def inc(x: int) -> int:
    return x + 1


# -- resources -------------------------------------------------------------------------------


def test_task_needing_a_resource_runs_only_where_it_is_declared():
    with fake_cluster(0) as (c, cluster):
        cluster.add_worker(nthreads=2, name="cpu")
        cluster.add_worker(nthreads=2, name="gpu", resources={"GPU": 1})
        c.wait_for_workers(2, timeout=10)
        name = token()

        where = c.gather(
            c.map(track, [name] * 6, [0.01 * i for i in range(6)], resources={"GPU": 1})
        )

        assert set(where) == {"gpu"}


def test_worker_runs_no_more_resource_tasks_at_once_than_it_declared():
    with fake_cluster(1, nthreads=4, resources={"GPU": 2}) as (c, _):
        name = token()

        c.gather(
            c.map(track, [name] * 8, [0.05 + 0.001 * i for i in range(8)], resources={"GPU": 1})
        )

        assert _PEAK[name] == 2


def test_resource_tasks_leave_the_other_threads_free_for_other_work():
    with fake_cluster(1, nthreads=3, resources={"GPU": 1}) as (c, _):
        gpu, cpu = token(), token()

        gpu_futures = c.map(
            track, [gpu] * 3, [0.2 + 0.001 * i for i in range(3)], resources={"GPU": 1}
        )
        cpu_futures = c.map(track, [cpu] * 4, [0.05 + 0.001 * i for i in range(4)])
        c.gather(cpu_futures + gpu_futures)

        assert _PEAK[gpu] == 1 and _PEAK[cpu] == 2


def test_task_needing_a_resource_nobody_has_waits_for_a_worker_that_has_it():
    with fake_cluster(1) as (c, cluster):
        future = c.submit(inc, 1, resources={"MEM": 10})
        time.sleep(0.2)
        assert not future.done()

        cluster.add_worker(nthreads=1, name="big", resources={"MEM": 16})

        assert future.result(timeout=10) == 2


# -- long-running tasks ----------------------------------------------------------------------


def fan_out_with_worker_client(n: int) -> int:
    with worker_client() as client:
        return sum(client.gather(client.map(inc, range(n))))


def fan_out_with_secede(n: int) -> int:
    client = get_client()
    futures = client.map(inc, range(n))
    secede()
    total = sum(client.gather(futures))
    rejoin()
    return total


def fan_out_plainly(n: int) -> int:
    client = get_client()
    return sum(client.gather(client.map(inc, range(n))))


@pytest.mark.parametrize(
    "fan_out", [fan_out_with_worker_client, fan_out_with_secede, fan_out_plainly]
)
def test_task_waiting_on_subtasks_does_not_deadlock_a_one_thread_worker(fan_out):
    with fake_cluster(1, nthreads=1) as (c, _):
        assert c.submit(fan_out, 10).result(timeout=20) == sum(range(1, 11))


def nested(depth: int) -> int:
    if depth == 0:
        return 0
    with worker_client() as client:
        return 1 + client.submit(nested, depth - 1).result()


def test_tasks_may_nest_several_levels_deep_on_one_thread():
    with fake_cluster(1, nthreads=1) as (c, _):
        assert c.submit(nested, 3).result(timeout=20) == 3


def test_seceded_worker_still_runs_at_most_nthreads_ordinary_tasks(gates):
    with fake_cluster(1, nthreads=1) as (c, _):
        name = token()

        def parent() -> list[str]:
            with worker_client() as client:
                seconds = [0.03 + 0.001 * i for i in range(4)]
                return client.gather(client.map(track, [name] * 4, seconds))

        c.submit(parent).result(timeout=20)

        assert _PEAK[name] == 1


def test_get_client_outside_a_task_is_the_default_client():
    with fake_cluster(1) as (c, _):
        assert get_client() is c


# -- stealing and balance --------------------------------------------------------------------


def slow(i: int, seconds: float) -> int:
    count_call(f"slow-{i}")
    time.sleep(seconds)
    return i


def test_work_queued_on_a_busy_worker_moves_to_a_worker_that_joins_idle():
    with fake_cluster(1, nthreads=1) as (c, cluster):
        c.submit(slow, -1, 0.005).result()  # the scheduler learns that slow is cheap...
        futures = c.map(slow, range(6), seconds=0.3)  # ...so one worker takes all six
        time.sleep(0.1)
        newcomer = cluster.add_worker(nthreads=1, name="late")

        wait(futures, timeout=20)

        assert newcomer.executed > 0  # work moved to the newcomer
        assert all(calls(f"slow-{i}") == 1 for i in range(6))  # and none ran twice
        assert c.gather(futures) == list(range(6))


def sleep_and_report(i: int) -> str:
    from rdist import get_worker

    time.sleep(0.05)
    return get_worker().name


def test_independent_tasks_spread_over_all_workers():
    with fake_cluster(3, nthreads=1) as (c, _):
        where = c.gather(c.map(sleep_and_report, range(12)))

        assert sorted(set(where)) == ["w0", "w1", "w2"]
        assert min(where.count(w) for w in set(where)) >= 2


def test_worker_notifies_the_client_itself(cluster_and_client):
    c, cluster = cluster_and_client
    future = c.submit(inc, 41)

    assert future.result(timeout=10) == 42
    wait_until(lambda: cluster.scheduler.state.tasks[future.key].state.value == "memory")


# -- co-assignment ---------------------------------------------------------------------------


def fail_at(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad link {x}")
    return x + 1


def test_a_chain_submitted_link_by_link_runs_on_one_worker_with_the_right_answer():
    with fake_cluster(2) as (c, cluster):
        x = c.submit(inc, 0)
        for _ in range(199):
            x = c.submit(inc, x)

        assert x.result(timeout=30) == 200
        assert sorted(w.executed for w in cluster.workers)[0] <= 1  # (one warm-up at most)


def test_a_failure_inside_a_co_assigned_chain_errs_its_end_and_leaves_the_workers_clean():
    with fake_cluster(1) as (c, cluster):
        x = c.submit(fail_at, 0, 5)
        for _ in range(20):
            x = c.submit(fail_at, x, 5)

        with pytest.raises(ValueError, match="bad link 5"):
            x.result(timeout=30)
        del x
        wait_until(lambda: not cluster.workers[0].state.tasks, what="co-assigned tasks freed")


def test_quick_task_run_on_the_stream_thread_may_still_wait_on_subtasks():
    with fake_cluster(1, nthreads=1) as (c, cluster):
        for _ in range(3):  # learn that fan_out_plainly is quick: later runs go inline
            assert c.submit(fan_out_plainly, 0, pure=False).result(timeout=20) == 0
        worker = cluster.workers[0]
        assert worker._is_fast(type("T", (), {"key": "fan_out_plainly-x"})())

        assert c.submit(fan_out_plainly, 10, pure=False).result(timeout=20) == sum(range(1, 11))
        assert c.submit(inc, 1).result(timeout=10) == 2  # the stream is still read
