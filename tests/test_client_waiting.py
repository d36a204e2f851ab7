"""Waiting on futures (CONTRACT items 13-16), on an in-process fakeredis cluster."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from rdist import CancelledError, as_completed, wait
from tests.client_helpers import wait_gate, wait_until
from tests.conftest import fake_cluster


def inc(x: int) -> int:
    return x + 1


def fail(x: object = None) -> int:
    raise ValueError(f"bad {x}")


def gated_inc(gate: str, x: int) -> int:
    wait_gate(gate)
    return x + 1


def gated_fail(gate: str) -> int:
    wait_gate(gate)
    raise ValueError("late failure")


# -- 13. wait --------------------------------------------------------------------------------


def test_wait_all_completed_returns_every_future_done(c):
    futures = c.map(inc, range(5))

    done, not_done = wait(futures, timeout=10)

    assert done == set(futures)
    assert not_done == set()
    assert all(f.status == "finished" for f in futures)


def test_wait_result_unpacks_by_name(c):
    future = c.submit(inc, 1)

    result = wait([future], timeout=10)

    assert result.done == {future} and result.not_done == set()


def test_wait_counts_erred_futures_as_done(c):
    good, bad = c.submit(inc, 1), c.submit(fail, 1)

    done, not_done = wait([good, bad], timeout=10)

    assert done == {good, bad}
    assert not_done == set()
    assert bad.status == "error"


def test_wait_first_completed_returns_once_one_is_done(c, gates):
    gate = gates.new()
    slow = c.submit(gated_inc, gate, 1)
    fast = c.submit(inc, 1)

    done, not_done = wait([slow, fast], timeout=10, return_when="FIRST_COMPLETED")

    assert fast in done
    assert not_done == {slow}


def test_wait_first_completed_counts_an_error_as_completion(c, gates):
    gate, fail_gate = gates.new(), gates.new()
    slow = c.submit(gated_inc, gate, 1)
    failing = c.submit(gated_fail, fail_gate)

    gates.open(fail_gate)
    done, not_done = wait([slow, failing], timeout=10, return_when="FIRST_COMPLETED")

    assert done == {failing} and not_done == {slow}


def test_wait_timeout_raises_timeout_error(c, gates):
    gate = gates.new()
    slow = c.submit(gated_inc, gate, 1)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait([slow, c.submit(inc, 1)], timeout=0.2)
    with pytest.raises(TimeoutError):
        wait([slow], timeout=0.2, return_when="FIRST_COMPLETED")

    assert time.monotonic() - started < 2
    assert not slow.done()


def test_wait_rejects_an_unknown_return_when(c):
    with pytest.raises(ValueError):
        wait([c.submit(inc, 1)], return_when="SOMETIMES")


# -- 14. result timeout ----------------------------------------------------------------------


def test_result_timeout_raises_without_cancelling(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    future = c.submit(gated_inc, gate, 1)

    with pytest.raises(TimeoutError):
        future.result(timeout=0.1)

    assert future.status == "pending" and not future.cancelled()

    # the submission reaches the scheduler on its own thread: 0.1 s may be too soon for it
    def live_at_the_scheduler() -> bool:
        task = cluster.scheduler.state.tasks.get(future.key)
        return task is not None and task.state.value in ("processing", "queued")

    wait_until(live_at_the_scheduler, what="the task processing or queued")
    gates.open(gate)
    assert future.result(timeout=10) == 2


# -- 15. as_completed ------------------------------------------------------------------------


def _release_in_order(gates, gate_names, futures, order):
    for i in order:
        gates.open(gate_names[i])
        futures[i].result(timeout=10)


def test_as_completed_yields_each_future_once_in_completion_order(gates):
    with fake_cluster(n_workers=1, nthreads=3) as (c, _):
        names = [gates.new() for _ in range(3)]
        futures = [c.submit(gated_inc, name, i) for i, name in enumerate(names)]
        ac = as_completed(futures, timeout=10)

        _release_in_order(gates, names, futures, [2, 0, 1])

        assert list(ac) == [futures[2], futures[0], futures[1]]
        gates.open_all()


def test_as_completed_with_results_yields_future_result_pairs(c):
    futures = c.map(inc, range(4))

    pairs = list(as_completed(futures, with_results=True, timeout=10))

    assert sorted(result for _, result in pairs) == [1, 2, 3, 4]
    assert all(f.result(timeout=10) == result for f, result in pairs)
    assert {f for f, _ in pairs} == set(futures)


def test_as_completed_includes_erred_futures(c):
    futures = [c.submit(inc, 1), c.submit(fail, 1)]

    seen = list(as_completed(futures, timeout=10))

    assert set(seen) == set(futures)


def test_as_completed_with_results_raises_errors_by_default(c):
    with pytest.raises(ValueError):
        list(as_completed([c.submit(fail, 1)], with_results=True, timeout=10))


def test_as_completed_accepts_futures_added_while_iterating(c):
    ac = as_completed([c.submit(inc, 1)], timeout=10)
    seen = []
    for future in ac:
        seen.append(future.result(timeout=10))
        if len(seen) == 1:
            ac.add(c.submit(inc, 10))

    assert seen == [2, 11]


def test_as_completed_works_with_async_for(c):
    futures = c.map(inc, range(3))

    async def collect():
        return [f async for f in as_completed(futures)]

    seen = asyncio.run(asyncio.wait_for(collect(), timeout=10))

    assert sorted(seen, key=futures.index) == futures


def test_as_completed_async_with_results(c):
    futures = c.map(inc, range(3))

    async def collect():
        return [pair async for pair in as_completed(futures, with_results=True)]

    pairs = asyncio.run(asyncio.wait_for(collect(), timeout=10))

    assert sorted(result for _, result in pairs) == [1, 2, 3]


def test_future_can_be_awaited(c):
    async def main():
        return await asyncio.wait_for(c.submit(inc, 41), timeout=10)

    assert asyncio.run(main()) == 42


# -- 16. done callbacks ----------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, str]] = []
        self.event = threading.Event()

    def __call__(self, future) -> None:
        self.calls.append((future, future.status))
        self.event.set()


def test_done_callback_fires_once_after_completion(c, gates):
    gate = gates.new()
    future = c.submit(gated_inc, gate, 1)
    recorder = Recorder()
    future.add_done_callback(recorder)
    assert recorder.calls == []

    gates.open(gate)

    assert recorder.event.wait(10)
    assert future.result(timeout=10) == 2
    time.sleep(0.05)
    assert recorder.calls == [(future, "finished")]


def test_done_callback_fires_after_an_error(c):
    recorder = Recorder()

    c.submit(fail, 1).add_done_callback(recorder)

    assert recorder.event.wait(10)
    assert [status for _, status in recorder.calls] == ["error"]


def test_done_callback_fires_after_cancellation(c, gates):
    gate = gates.new()
    future = c.submit(gated_inc, gate, 1)
    recorder = Recorder()
    future.add_done_callback(recorder)

    future.cancel()

    assert recorder.event.wait(10)
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    gates.open(gate)
    time.sleep(0.05)
    assert recorder.calls == [(future, "cancelled")]


def test_done_callback_added_to_a_finished_future_fires_at_once(c):
    future = c.submit(inc, 1)
    future.result(timeout=10)
    recorder = Recorder()

    future.add_done_callback(recorder)

    wait_until(lambda: len(recorder.calls) == 1, timeout=2)
    assert recorder.calls == [(future, "finished")]


def test_a_failing_callback_does_not_stop_others(c):
    future = c.submit(inc, 1)
    recorder = Recorder()

    future.add_done_callback(lambda f: 1 / 0)
    future.add_done_callback(recorder)

    assert recorder.event.wait(10)
    assert future.result(timeout=10) == 2
