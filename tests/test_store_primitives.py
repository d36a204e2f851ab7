"""The Redis side of the coordination primitives (Lua scripts and their wrappers), on
fakeredis and on a real redis-server: leases with fencing tokens that lapse, stale
releases refused, all-or-nothing multi-locks, bounded queues, watched values."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from rdist.store import RedisStore, connect
from rdist.store.connection import drop_fake_server
from rdist.store.primitives import InconsistentLimit, Lease, Wait

#: the timers of the running test, ended before its store closes
_TIMERS: list[threading.Timer] = []


def later(seconds: float, fn: Callable[[], object]) -> None:
    timer = threading.Timer(seconds, fn)
    timer.start()
    _TIMERS.append(timer)


def _timers_done() -> None:
    """A timer still reading its reply when the test saw its effect raised in its thread
    once the store closed (pytest blamed the next test): it ends first."""
    while _TIMERS:
        _TIMERS.pop().join(10)


@pytest.fixture(params=["fake", "real"])
def store(request: pytest.FixtureRequest) -> Iterator[RedisStore]:
    if request.param == "fake":
        name = uuid.uuid4().hex
        s = connect(f"fakeredis://{name}", "prims")
        yield s
        _timers_done()
        s.close()
        drop_fake_server(name)
    else:
        url = request.getfixturevalue("redis_url")
        s = connect(url, f"prims-{uuid.uuid4().hex}")
        yield s
        _timers_done()
        s.close()


def lease_id() -> str:
    return uuid.uuid4().hex


# -- semaphores ------------------------------------------------------------------------------


def test_a_semaphore_hands_out_at_most_its_leases_with_growing_fencing_tokens(store):
    p = store.primitives
    first = p.acquire("s", lease_id(), 2, 10_000)
    second = p.acquire("s", lease_id(), 2, 10_000)
    third = p.acquire("s", lease_id(), 2, 10_000)

    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert second.token > first.token
    assert isinstance(third, Wait) and 0 < third.max_ms <= 10_000
    assert p.held("s") == 2


def test_a_release_frees_a_lease_and_wakes_a_waiter_after_the_id_it_was_given(store):
    p = store.primitives
    held = p.acquire("s", lease_id(), 1, 10_000)
    wait = p.acquire("s", lease_id(), 1, 10_000)
    assert isinstance(held, Lease) and isinstance(wait, Wait)

    assert p.release("s", held)

    assert p.wait_after(p.semaphore_released("s"), wait.after, 1.0)
    assert isinstance(p.acquire("s", lease_id(), 1, 10_000), Lease)


def test_a_lease_not_renewed_lapses_and_its_late_release_is_refused(store):
    p = store.primitives
    stale = p.acquire("s", lease_id(), 1, 100)
    assert isinstance(stale, Lease)
    time.sleep(0.2)

    successor = p.acquire("s", lease_id(), 1, 10_000)

    assert isinstance(successor, Lease) and successor.token > stale.token
    assert not p.release("s", stale)  # never frees the successor's lease
    assert p.held("s") == 1
    assert p.renew("s", [stale, successor], 10_000) == [False, True]


def test_renewal_keeps_a_lease_past_its_timeout(store):
    p = store.primitives
    # renewed every 0.25 s, 1.5 s in all: past its 1 s timeout, and a renewal that comes
    # 0.75 s late on a loaded machine still finds it (a 0.3 s lease did not outlive 0.2 s)
    lease = p.acquire("s", lease_id(), 1, 1000)
    assert isinstance(lease, Lease)
    for _ in range(6):
        time.sleep(0.25)
        assert p.renew("s", [lease], 1000) == [True]

    assert isinstance(p.acquire("s", lease_id(), 1, 1000), Wait)
    assert p.release("s", lease)


def test_fencing_tokens_grow_across_semaphores_and_multilocks_and_never_go_back(store):
    p = store.primitives
    first = p.acquire("s", lease_id(), 1, 10_000)
    assert isinstance(first, Lease) and p.release("s", first)
    p.drop_semaphore("s")  # as if it had vanished while idle

    again = p.acquire("s", lease_id(), 1, 10_000)
    other = p.acquire_locks(["a"], 1, lease_id(), 10_000)

    assert isinstance(again, Lease) and isinstance(other, Lease)
    assert first.token < again.token < other.token


def test_renewing_a_lease_keeps_its_keys_from_expiring_while_held(store):
    p = store.primitives
    lease = p.acquire("s", lease_id(), 1, 10_000)
    assert isinstance(lease, Lease)
    leases_key = store.keys.semaphore("s") + ":leases"
    store.redis.expire(leases_key, 1)

    assert p.renew("s", [lease], 10_000) == [True]
    assert store.redis.ttl(leases_key) > 1000


def test_a_semaphore_refuses_another_max_leases_naming_both(store):
    store.primitives.acquire("s", lease_id(), 2, 1000)

    with pytest.raises(InconsistentLimit, match="max_leases=2, not 3"):
        store.primitives.acquire("s", lease_id(), 3, 1000)


# -- multi-locks -------------------------------------------------------------------------------


def test_a_multilock_takes_all_its_names_or_none(store):
    p = store.primitives
    ab = p.acquire_locks(["a", "b"], 2, lease_id(), 10_000)
    bc = p.acquire_locks(["b", "c"], 2, lease_id(), 10_000)

    assert isinstance(ab, Lease) and set(ab.names) == {"a", "b"}
    assert isinstance(bc, Wait)
    assert p.locks_held(["a", "b", "c"]) == [True, True, False]  # c was not half-taken

    assert p.release_locks(ab)
    bc = p.acquire_locks(["b", "c"], 2, lease_id(), 10_000)
    assert isinstance(bc, Lease)


def test_a_multilock_may_take_some_of_its_names(store):
    p = store.primitives
    a = p.acquire_locks(["a"], 1, lease_id(), 10_000)
    some = p.acquire_locks(["a", "b", "c"], 2, lease_id(), 10_000)

    assert isinstance(a, Lease) and isinstance(some, Lease)
    assert set(some.names) == {"b", "c"}


def test_a_lapsed_multilock_frees_its_names_and_refuses_its_release(store):
    p = store.primitives
    stale = p.acquire_locks(["a", "b"], 2, lease_id(), 100)
    time.sleep(0.2)

    fresh = p.acquire_locks(["a"], 1, lease_id(), 10_000)

    assert isinstance(stale, Lease) and isinstance(fresh, Lease)
    assert not p.release_locks(stale)
    assert p.locks_held(["a", "b"]) == [True, False]


# -- queues --------------------------------------------------------------------------------------


def test_a_queue_is_first_in_first_out_and_takes_in_batches(store):
    p = store.primitives
    for i in range(5):
        assert p.put("q", b"%d" % i, 0) is None

    assert p.take("q", 1) == [b"0"]
    assert p.take("q", 2) == [b"1", b"2"]
    assert p.qsize("q") == 2
    assert p.take("q", 0) == [b"3", b"4"]
    assert p.take("q", 0) == []


def test_a_full_queue_refuses_until_an_item_is_taken(store):
    p = store.primitives
    assert p.queue_limit("q", 1) == 1
    assert p.queue_limit("q", 5) == 1  # the first creator's size stays
    assert p.put("q", b"a", 1) is None
    full = p.put("q", b"b", 1)
    assert isinstance(full, Wait)

    assert p.take("q", 1) == [b"a"]

    assert p.wait_after(p.queue_space("q"), full.after, 1.0)
    assert p.put("q", b"b", 1) is None


def test_items_put_back_return_to_the_head_in_their_order(store):
    p = store.primitives
    for item in (b"a", b"b", b"c"):
        p.put("q", item, 0)
    taken = p.take("q", 2)

    p.put_back("q", taken)

    assert p.take("q", 0) == [b"a", b"b", b"c"]


def test_a_blocking_take_waits_for_an_item(store):
    p = store.primitives
    later(0.1, lambda: p.put("q", b"late", 0))
    started = time.monotonic()

    assert p.take_blocking("q", 5.0) == b"late"
    assert time.monotonic() - started < 2.0
    assert p.take_blocking("q", 0.05) is None


# -- watched values ------------------------------------------------------------------------------


def test_a_watched_value_is_set_read_and_deleted_and_wakes_its_waiter(store):
    p = store.primitives
    unset = p.get_value("var", "x")
    assert isinstance(unset, Wait)
    later(0.1, lambda: p.set_value("var", "x", b"1"))

    assert p.wait_after(p.value_changes("var", "x"), unset.after, 5.0)
    assert p.get_value("var", "x") == b"1"
    assert p.set_value("var", "x", b"2") == b"1"
    assert p.delete_value("var", "x") == b"2"
    assert isinstance(p.get_value("var", "x"), Wait)


def test_a_wait_with_nothing_changing_returns_false_after_its_timeout(store):
    p = store.primitives
    unset = p.get_value("event", "e")
    assert isinstance(unset, Wait)
    started = time.monotonic()

    assert not p.wait_after(p.value_changes("event", "e"), unset.after, 0.2)
    assert 0.15 < time.monotonic() - started < 2.0


# -- datasets ----------------------------------------------------------------------------


def test_datasets_publish_once_unless_overridden_and_say_what_they_replaced(store):
    p = store.primitives
    assert p.publish("d", b"1", override=False) == (True, None)
    assert p.publish("d", b"2", override=False) == (False, None)
    assert p.dataset("d") == b"1"
    assert p.publish("d", b"3", override=True) == (True, b"1")
    assert p.datasets(["d", "nope"]) == [b"3", None]
    assert p.dataset_names() == ["d"]
    assert p.unpublish("d") == b"3"
    assert p.unpublish("d") is None and p.dataset_names() == []
