"""client.get_executor(): the cluster as a concurrent.futures.Executor, as dask's."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

from rdist import Client, get_worker


def inc(x: int) -> int:
    return x + 1


def worker_name(_: object = None) -> str:
    return get_worker().address


def test_submit_and_map_run_on_the_cluster(c: Client) -> None:
    with c.get_executor() as executor:
        assert executor.submit(inc, 1).result() == 2
        assert list(executor.map(inc, range(5))) == [1, 2, 3, 4, 5]
        assert executor.submit(worker_name).result() in c.scheduler_info()["workers"]


def test_options_apply_to_every_task(c: Client) -> None:
    target = sorted(c.scheduler_info()["workers"])[0]
    executor = c.get_executor(workers=[target])
    assert set(executor.map(worker_name, range(6))) == {target}


def test_submissions_are_impure_so_each_call_runs() -> None:
    seen = []

    def stamp() -> float:
        return time.time()

    from tests.conftest import fake_cluster

    with fake_cluster() as (client, _):
        executor = client.get_executor()
        first, second = executor.submit(stamp), executor.submit(stamp)
        assert first.key != second.key
        seen.extend([first.result(), second.result()])
    assert len(seen) == 2


def test_unknown_option_is_refused_at_the_call(c: Client) -> None:
    with pytest.raises(TypeError, match="unexpected option"):
        c.get_executor(chunks=3)


def test_no_submission_after_shutdown(c: Client) -> None:
    executor = c.get_executor()
    future = executor.submit(inc, 1)
    executor.shutdown(wait=True)
    assert future.done()
    with pytest.raises(RuntimeError, match="shut down"):
        executor.submit(inc, 2)


def test_map_timeout_is_the_executor_kind(c: Client) -> None:
    executor = c.get_executor()
    with pytest.raises(concurrent.futures.TimeoutError):
        list(executor.map(time.sleep, [5], timeout=0.2))
    executor.shutdown(wait=False)


def test_run_on_scheduler_says_why_not_and_what_instead(c: Client) -> None:
    with pytest.raises(NotImplementedError, match="client.run"):
        c.run_on_scheduler(inc, 1)
