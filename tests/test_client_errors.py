"""Errors and retries (CONTRACT items 7-12), on an in-process fakeredis cluster."""

from __future__ import annotations

import threading

import pytest

from rdist import wait
from tests.client_helpers import calls, count_call, token, wait_gate
from tests.conftest import fake_cluster


class CustomError(Exception):
    pass


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def fail(x: object = None) -> int:
    raise CustomError(f"boom {x}")


def div(x: int, y: int) -> float:
    return x / y


def gated_inc(gate: str, x: int) -> int:
    wait_gate(gate)
    return x + 1


def flaky(name: str, failures: int) -> str:
    """Raise on the first ``failures`` calls under ``name``, then succeed."""
    count_call(name)
    if calls(name) <= failures:
        raise CustomError(f"attempt {calls(name)}")
    return "ok"


_BROKEN: set[str] = set()


def fails_while_broken(name: str) -> str:
    if name in _BROKEN:
        raise CustomError("still broken")
    return "fixed"


def unpicklable_result() -> threading.Lock:
    return threading.Lock()


# -- 7. a raising task -----------------------------------------------------------------------


def test_raising_task_ends_in_error_and_result_reraises_its_type(c):
    future = c.submit(fail, 1)

    with pytest.raises(CustomError, match="boom 1"):
        future.result(timeout=10)
    assert future.status == "error"
    assert future.done()


def test_exception_returns_the_remote_exception(c):
    future = c.submit(div, 1, 0)

    exc = future.exception(timeout=10)

    assert isinstance(exc, ZeroDivisionError)


def test_exception_of_a_successful_future_is_none(c):
    future = c.submit(inc, 1)

    assert future.exception(timeout=10) is None
    assert future.traceback(timeout=10) is None


def test_traceback_is_a_traceback_object_of_the_remote_frames(c):
    import traceback
    import types

    future = c.submit(fail, 1)

    tb = future.traceback(timeout=10)

    assert isinstance(tb, types.TracebackType)
    text = "".join(traceback.format_tb(tb))
    assert "in fail" in text and "raise CustomError" in text


def test_cluster_carries_on_after_a_task_raises(c):
    bad = c.submit(fail, 1)
    wait(bad, timeout=10)

    assert c.submit(inc, 1).result(timeout=10) == 2
    assert c.gather(c.map(inc, range(5))) == [1, 2, 3, 4, 5]


# -- 8. errors flow to dependents ------------------------------------------------------------


def test_dependents_of_an_erred_task_err_with_the_original_exception(c):
    bad = c.submit(fail, 1)
    child = c.submit(inc, bad)
    grandchild = c.submit(add, child, 1)

    for future in (child, grandchild):
        with pytest.raises(CustomError, match="boom 1"):
            future.result(timeout=10)
        assert future.status == "error"


def test_dependent_submitted_after_the_failure_errs_too(c):
    bad = c.submit(fail, 2)
    wait(bad, timeout=10)

    child = c.submit(inc, bad)

    assert isinstance(child.exception(timeout=10), CustomError)


# -- 9. failures are isolated ----------------------------------------------------------------


def test_a_failing_task_does_not_block_unrelated_tasks():
    with fake_cluster(n_workers=1) as (c, _):
        bad = c.submit(fail, 1)
        good = c.map(inc, range(10))
        sibling_of_failure = c.submit(add, c.submit(inc, 1), 1)

        assert c.gather(good) == list(range(1, 11))
        assert sibling_of_failure.result(timeout=10) == 3
        assert bad.status == "error"


def test_one_failed_input_errs_only_its_own_dependents(c):
    bad, ok = c.submit(fail, 1), c.submit(inc, 1)

    from_bad, from_ok = c.submit(inc, bad), c.submit(inc, ok)

    assert from_ok.result(timeout=10) == 3
    assert isinstance(from_bad.exception(timeout=10), CustomError)


# -- 10. gather ------------------------------------------------------------------------------


def test_gather_keeps_the_structure_of_its_input(c):
    a, b, d = c.submit(inc, 1), c.submit(inc, 2), c.submit(inc, 3)

    assert c.gather([a, (b, d)]) == [2, (3, 4)]
    nested = {"x": a, "y": [b, {"z": d}], "lit": 7}
    assert c.gather(nested) == {"x": 2, "y": [3, {"z": 4}], "lit": 7}
    assert c.gather(a) == 2


def test_gather_errors_raise_raises_the_first_failure(c):
    futures = [c.submit(inc, 1), c.submit(fail, 1), c.submit(inc, 2)]

    with pytest.raises(CustomError):
        c.gather(futures, errors="raise")


def test_gather_errors_skip_drops_the_failed_elements(c):
    futures = [c.submit(inc, 1), c.submit(fail, 1), c.submit(inc, 2)]

    assert c.gather(futures, errors="skip") == [2, 3]
    assert c.gather({"a": futures[0], "b": futures[1]}, errors="skip") == {"a": 2}


# -- 11. retries -----------------------------------------------------------------------------


def test_retries_rerun_a_raising_task_until_it_succeeds(c):
    name = token()

    future = c.submit(flaky, name, 2, retries=2)

    assert future.result(timeout=10) == "ok"
    assert calls(name) == 3


def test_retries_give_up_after_n_extra_attempts(c):
    name = token()

    future = c.submit(flaky, name, 5, retries=2)

    with pytest.raises(CustomError, match="attempt 3"):
        future.result(timeout=10)
    assert calls(name) == 3


def test_without_retries_a_raising_task_runs_once(c):
    name = token()

    future = c.submit(flaky, name, 1)

    assert isinstance(future.exception(timeout=10), CustomError)
    assert calls(name) == 1


def test_client_retry_reruns_erred_futures(c):
    name = token()
    _BROKEN.add(name)
    future = c.submit(fails_while_broken, name)
    assert isinstance(future.exception(timeout=10), CustomError)

    _BROKEN.discard(name)
    c.retry([future])

    assert future.result(timeout=10) == "fixed"
    assert future.status == "finished"


def test_retry_of_a_dependent_reruns_the_failed_dependency(c):
    name = token()
    _BROKEN.add(name)
    root = c.submit(fails_while_broken, name)
    child = c.submit(str.upper, root)
    assert isinstance(child.exception(timeout=10), CustomError)

    _BROKEN.discard(name)
    child.retry()

    assert child.result(timeout=10) == "FIXED"


# -- 12. serialization failures --------------------------------------------------------------


def test_unserializable_argument_fails_at_submit_with_a_clear_error(c):
    with pytest.raises(TypeError, match="argument 0 .*cannot be serialized"):
        c.submit(inc, threading.Lock())
    with pytest.raises(TypeError, match="keyword argument 'y'"):
        c.submit(add, 1, y=threading.Lock())

    assert c.submit(inc, 1).result(timeout=10) == 2


def test_unserializable_result_errs_that_future_only(c):
    bad = c.submit(unpicklable_result)
    good = c.submit(inc, 1)

    exc = bad.exception(timeout=10)

    assert isinstance(exc, TypeError)
    assert "cannot be serialized" in str(exc)
    assert good.result(timeout=10) == 2
    assert c.submit(inc, 2).result(timeout=10) == 3


def test_unserializable_result_does_not_disturb_running_work(c, gates):
    gate = gates.new()
    running = c.submit(gated_inc, gate, 1)

    bad = c.submit(unpicklable_result)
    wait(bad, timeout=10)
    gates.open(gate)

    assert bad.status == "error"
    assert running.result(timeout=10) == 2
