"""Lock, Semaphore, MultiLock, Event, Variable and Queue as dask.distributed's, on a
fakeredis cluster: from the client and from inside tasks."""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Iterator

import pytest

from rdist import Client
from rdist.primitives import Event, Lock, MultiLock, Queue, Semaphore, Variable

#: A waiter woken by the change comes back within milliseconds of the 0.2 s it waits for; one
#: that missed the change would sleep out its 5 s timeout. 2 s tells the two apart and
#: leaves a loaded machine room (the timer thread and the waiter share two busy cores).
WOKEN_WITHIN = 2.0


#: the timers of the running test, ended before its cluster closes
_TIMERS: list[threading.Timer] = []


@pytest.fixture
def c(c: Client) -> Iterator[Client]:
    """The cluster's client; a test's timers end before the cluster closes (a timer still
    reading its reply when the test saw the effect raised in its thread once the cluster
    closed, and pytest blamed the next test)."""
    yield c
    while _TIMERS:
        _TIMERS.pop().join(10)


def later(seconds: float, fn, *args) -> threading.Timer:
    timer = threading.Timer(seconds, fn, args)
    timer.start()
    _TIMERS.append(timer)
    return timer


# -- locks -------------------------------------------------------------------------------------


def test_a_lock_is_held_by_one_holder_at_a_time(c: Client) -> None:
    first, second = Lock("x"), Lock("x")

    assert first.acquire()
    assert first.locked() and second.locked()
    assert not second.acquire(timeout=0.1)
    assert not second.acquire(blocking=False)
    first.release()
    assert second.acquire(timeout=1)
    second.release()
    assert not first.locked()


def test_a_waiting_lock_wakes_soon_after_the_release(c: Client) -> None:
    holder, waiter = Lock("x"), Lock("x")
    holder.acquire()
    later(0.2, holder.release)
    started = time.monotonic()

    assert waiter.acquire(timeout=5)
    assert time.monotonic() - started < WOKEN_WITHIN
    waiter.release()


def test_releasing_an_unheld_lock_raises(c: Client) -> None:
    with pytest.raises(ValueError, match="not yet acquired"):
        Lock("x").release()


def test_a_lock_used_as_a_context_manager_in_tasks_serialises_them(c: Client) -> None:
    def guarded(lock: Lock, i: int) -> tuple[float, float]:
        with lock:
            start = time.time()
            time.sleep(0.05)
            return start, time.time()

    spans = sorted(c.gather(c.map(guarded, [Lock("shared")] * 6, range(6))))

    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


def test_primitives_pickle_by_name_and_reach_the_same_structure(c: Client) -> None:
    lock, queue = Lock("x"), Queue("q", maxsize=3)

    copy, queue_copy = pickle.loads(pickle.dumps(lock)), pickle.loads(pickle.dumps(queue))

    assert copy.name == "x" and queue_copy.maxsize == 3
    assert lock.acquire() and copy.locked()
    lock.release()


def test_a_primitive_without_any_client_says_so() -> None:
    with pytest.raises(ValueError, match="No client"):
        Lock("x")


def test_a_semaphore_bounds_concurrent_holders(c: Client) -> None:
    sem = Semaphore(max_leases=2, name="pool")
    other = Semaphore(max_leases=2, name="pool")

    assert sem.acquire() and sem.acquire()
    assert sem.get_value() == 2
    assert not other.acquire(timeout=0.1)
    assert sem.release()
    assert other.acquire(timeout=1)
    assert other.release() and sem.release()
    assert sem.get_value() == 0
    with pytest.raises(RuntimeError, match="released more often"):
        sem.release()


def test_a_semaphore_with_another_max_leases_is_refused(c: Client) -> None:
    Semaphore(max_leases=2, name="pool").acquire()

    with pytest.raises(ValueError, match="max_leases=2, not 3"):
        Semaphore(max_leases=3, name="pool").acquire()


def test_a_lease_lives_past_its_timeout_while_its_holder_renews_it(c: Client) -> None:
    # the keeper renews every third of the timeout: a 1 s lease outlives a keeper thread
    # starved for 0.6 s on a loaded machine (a 0.3 s one lapsed after a 0.2 s stall)
    holder = Lock("x", lease_timeout=1.0)
    holder.acquire()
    time.sleep(2.5)  # two and a half timeouts: renewed meanwhile by the lease keeper

    assert not Lock("x", lease_timeout=1.0).acquire(timeout=0.1)
    assert holder.release()


def test_bad_arguments_are_refused_at_the_call(c: Client) -> None:
    with pytest.raises(ValueError, match="max_leases"):
        Semaphore(max_leases=0)
    with pytest.raises(ValueError, match="lease_timeout"):
        Lock("x", lease_timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        Lock("x").acquire(timeout=-1)
    with pytest.raises(TypeError, match="names"):
        MultiLock(["a", 1])  # type: ignore[list-item]


def test_a_multilock_takes_all_its_locks_or_none(c: Client) -> None:
    ab, bc = MultiLock(["a", "b"]), MultiLock(["b", "c"])

    assert ab.acquire()
    assert not bc.acquire(timeout=0.1)
    assert not MultiLock(["c"]).locked()  # c was not taken by the failed attempt
    later(0.2, ab.release)
    assert bc.acquire(timeout=5)
    assert bc.locked()
    bc.release()


def test_a_multilock_may_need_only_some_of_its_locks(c: Client) -> None:
    a = MultiLock(["a"])
    a.acquire()

    assert MultiLock(["a", "b", "c"]).acquire(num_locks=2, timeout=1)


# -- events, variables, queues ---------------------------------------------------------------------


def test_an_event_wakes_its_waiters_when_set(c: Client) -> None:
    event = Event("go")
    assert not event.is_set() and not event.wait(timeout=0.05)
    later(0.2, event.set)
    started = time.monotonic()

    assert event.wait(timeout=5)
    assert time.monotonic() - started < WOKEN_WITHIN
    event.clear()
    assert not event.is_set()


def test_tasks_wait_on_an_event_set_by_the_client(c: Client) -> None:
    def wait_for(event: Event) -> bool:
        return event.wait(timeout=10)

    future = c.submit(wait_for, Event("go"))
    time.sleep(0.2)
    Event("go").set()

    assert future.result(timeout=10) is True


def test_a_variable_is_shared_and_get_waits_for_a_value(c: Client) -> None:
    var = Variable("v")
    with pytest.raises(TimeoutError):
        var.get(timeout=0.05)
    later(0.2, var.set, {"answer": 42})

    assert var.get(timeout=5) == {"answer": 42}
    assert c.submit(lambda v: v.get(), Variable("v")).result(timeout=10) == {"answer": 42}
    var.delete()
    with pytest.raises(TimeoutError):
        var.get(timeout=0.05)


def test_a_variable_refuses_a_value_that_is_not_msgpack_data(c: Client) -> None:
    with pytest.raises(TypeError, match="msgpack data"):
        Variable("v").set(object())


def test_a_queue_passes_values_between_tasks_and_the_client_in_order(c: Client) -> None:
    queue = Queue("q")

    def produce(q: Queue, n: int) -> int:
        for i in range(n):
            q.put(i)
        return n

    assert c.submit(produce, queue, 5).result(timeout=10) == 5
    assert queue.qsize() == 5
    assert [queue.get(timeout=1) for _ in range(2)] == [0, 1]
    assert queue.get(batch=2) == [2, 3]
    assert queue.get(batch=True) == [4]
    assert queue.get(batch=True) == []
    with pytest.raises(TimeoutError):
        queue.get(timeout=0.05)


def test_a_bounded_queue_makes_put_wait_for_room(c: Client) -> None:
    queue = Queue("q", maxsize=1)
    queue.put("a")
    with pytest.raises(TimeoutError):
        queue.put("b", timeout=0.1)
    later(0.2, queue.get)

    queue.put("b", timeout=5)
    assert queue.get(timeout=1) == "b"
    assert Queue("q", maxsize=10).maxsize == 1  # the first creator's bound


def test_a_blocking_get_returns_soon_after_a_put(c: Client) -> None:
    queue = Queue("q")
    later(0.2, queue.put, "x")
    started = time.monotonic()

    assert queue.get(timeout=5) == "x"
    assert time.monotonic() - started < WOKEN_WITHIN
