"""Lifetime and cancellation (CONTRACT items 17-21), on an in-process fakeredis cluster."""

from __future__ import annotations

import gc

import pytest

import rdist.client.inbox as inbox_module
import rdist.scheduler.server as scheduler_module
from rdist import CancelledError, Client, fire_and_forget
from tests.client_helpers import calls, count_call, token, wait_gate, wait_until
from tests.conftest import fake_cluster


def inc(x: int) -> int:
    return x + 1


def counted_inc(name: str, x: int) -> int:
    count_call(name)
    return x + 1


def gated_inc(gate: str, x: int) -> int:
    wait_gate(gate)
    return x + 1


def gated_add(gate: str, x: int, y: int) -> int:
    wait_gate(gate)
    return x + y


def barrier(c: Client) -> None:
    """Return once the scheduler has handled everything ``c`` sent before (streams are FIFO)."""
    c.submit(str, token()).result(timeout=10)


def forgotten(cluster, key: str) -> bool:
    return key not in cluster.scheduler.state.tasks


def released(cluster, key: str) -> bool:
    """Forgotten, or kept only as lineage of a dependent that is still remembered."""
    ts = cluster.scheduler.state.tasks.get(key)
    return ts is None or ts.state.value == "released"


def held_by_no_worker(cluster, key: str) -> bool:
    return all(key not in w.data for w in cluster.workers)


# -- 17. dropping futures --------------------------------------------------------------------


def test_dropping_the_last_future_forgets_the_task_and_frees_its_data(cluster_and_client):
    c, cluster = cluster_and_client
    future = c.submit(inc, 1)
    assert future.result(timeout=10) == 2
    key = future.key
    assert not held_by_no_worker(cluster, key)

    del future
    gc.collect()

    wait_until(lambda: forgotten(cluster, key), what=f"{key} forgotten")
    wait_until(lambda: held_by_no_worker(cluster, key), what=f"{key} dropped by workers")
    wait_until(
        lambda: c.store.redis.hget(c.store.keys.results, key) is None,
        what=f"{key} result gone from Redis",
    )


def test_submitting_a_forgotten_key_again_recomputes_it(cluster_and_client):
    c, cluster = cluster_and_client
    name = token()
    future = c.submit(counted_inc, name, 1)
    assert future.result(timeout=10) == 2
    key = future.key
    del future
    gc.collect()
    wait_until(lambda: forgotten(cluster, key))

    again = c.submit(counted_inc, name, 1)

    assert again.key == key
    assert again.result(timeout=10) == 2
    assert calls(name) == 2


def test_dropping_and_resubmitting_at_once_recomputes_each_time(c):
    """The release and the new submission reach the scheduler (and the worker) in one batch."""
    name = token()
    for _ in range(5):
        future = c.submit(counted_inc, name, 1)
        assert future.result(timeout=10) == 2
        del future

    assert calls(name) == 5


def test_a_key_stays_while_another_future_of_this_client_holds_it(cluster_and_client):
    c, cluster = cluster_and_client
    name = token()
    first = c.submit(counted_inc, name, 1)
    second = c.submit(counted_inc, name, 1)
    first.result(timeout=10)

    del first
    gc.collect()
    barrier(c)

    assert second.key in cluster.scheduler.state.tasks
    assert second.result(timeout=10) == 2
    assert calls(name) == 1


def test_a_key_stays_while_another_client_holds_it(cluster_and_client):
    c, cluster = cluster_and_client
    name = token()
    with Client(cluster, set_as_default=False) as other:
        mine = c.submit(counted_inc, name, 1)
        theirs = other.submit(counted_inc, name, 1)
        assert mine.result(timeout=10) == 2
        key = mine.key

        del mine
        gc.collect()
        barrier(c)

        assert key in cluster.scheduler.state.tasks
        assert theirs.result(timeout=10) == 2
        assert calls(name) == 1

        del theirs
        gc.collect()
        wait_until(lambda: forgotten(cluster, key))


# -- 18. dependencies are kept for their dependents ------------------------------------------


def test_an_unfinished_dependency_runs_for_a_wanted_dependent(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    x = c.submit(gated_inc, gate, 1)
    y = c.submit(inc, x)
    x_key = x.key

    del x
    gc.collect()
    barrier(c)
    assert x_key in cluster.scheduler.state.tasks

    gates.open(gate)
    assert y.result(timeout=10) == 3
    wait_until(lambda: released(cluster, x_key), what="dependency released after use")
    wait_until(lambda: held_by_no_worker(cluster, x_key))


def test_a_finished_dependency_is_kept_until_its_dependent_is_done(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    x = c.submit(inc, 1)
    x.result(timeout=10)
    y = c.submit(gated_add, gate, x, 10)
    x_key = x.key

    del x
    gc.collect()
    barrier(c)

    assert cluster.scheduler.state.tasks[x_key].state.value == "memory"
    gates.open(gate)
    assert y.result(timeout=10) == 12
    wait_until(lambda: released(cluster, x_key))
    wait_until(lambda: held_by_no_worker(cluster, x_key))


# -- 19. closing or losing a client ----------------------------------------------------------


def test_closing_a_client_releases_everything_it_held(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    other = Client(cluster, set_as_default=False)
    done = other.submit(inc, 100)
    running = other.submit(gated_inc, gate, 1)
    waiting = other.submit(inc, running)
    done.result(timeout=10)
    keys = [done.key, running.key, waiting.key]

    other.close()

    wait_until(lambda: all(forgotten(cluster, k) for k in keys), what="all keys forgotten")
    wait_until(lambda: held_by_no_worker(cluster, done.key))
    assert other.id not in cluster.scheduler.state.clients
    assert c.submit(inc, 1).result(timeout=10) == 2


def test_closing_a_client_keeps_keys_other_clients_hold(cluster_and_client):
    c, cluster = cluster_and_client
    mine = c.submit(inc, 5)
    other = Client(cluster, set_as_default=False)
    theirs = other.submit(inc, 5)
    theirs.result(timeout=10)

    other.close()
    barrier(c)

    assert mine.key in cluster.scheduler.state.tasks
    assert mine.result(timeout=10) == 6


def test_a_client_that_stops_heartbeating_is_dropped_and_its_keys_released(monkeypatch):
    # given clients that beat often and a scheduler that gives up on them quickly
    monkeypatch.setenv("RDIST_CLIENT__HEARTBEAT_INTERVAL", "0.05")
    monkeypatch.setattr(inbox_module, "BLOCK_MS", 50)
    monkeypatch.setattr(scheduler_module, "BLOCK_MS", 50)
    with fake_cluster() as (c, cluster):
        cluster.scheduler.client_ttl = 0.5
        lost = Client(cluster, set_as_default=False)
        future = lost.submit(inc, 41)
        assert future.result(timeout=10) == 42
        key = future.key

        # when the client dies without saying goodbye (its threads stop, nothing is sent)
        lost._stop.set()
        lost._sender.wake()
        for thread in lost._threads:
            thread.join(timeout=2)

        # then the scheduler drops it and releases its keys; live clients carry on
        wait_until(
            lambda: lost.id not in cluster.scheduler.state.clients,
            timeout=5,
            what="lost client dropped",
        )
        wait_until(lambda: forgotten(cluster, key))
        assert c.id in cluster.scheduler.state.clients
        assert c.submit(inc, 1).result(timeout=10) == 2
        lost.status = "closed"  # nothing left to close: its threads are gone


# -- 20. cancellation ------------------------------------------------------------------------


def test_cancel_makes_futures_cancelled_and_result_raises(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    future = c.submit(gated_inc, gate, 1)

    c.cancel([future])

    assert future.cancelled()
    assert future.status == "cancelled"
    with pytest.raises(CancelledError):
        future.result(timeout=10)
    wait_until(lambda: forgotten(cluster, future.key))


def test_cancel_cancels_dependents_too(c, gates):
    gate = gates.new()
    x = c.submit(gated_inc, gate, 1)
    y = c.submit(inc, x)
    z = c.submit(inc, y)

    x.cancel()

    for future in (y, z):
        wait_until(future.cancelled, what=f"{future.key} cancelled")
        with pytest.raises(CancelledError):
            future.result(timeout=10)


def test_cancel_leaves_other_clients_futures_alone(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    with Client(cluster, set_as_default=False) as other:
        mine = c.submit(gated_inc, gate, 1)
        theirs = other.submit(gated_inc, gate, 1)
        barrier(other)

        c.cancel(mine)
        gates.open(gate)

        assert mine.cancelled()
        assert theirs.result(timeout=10) == 2
        assert not theirs.cancelled()


def test_cancel_with_force_cancels_every_clients_future(cluster_and_client, gates):
    c, cluster = cluster_and_client
    gate = gates.new()
    with Client(cluster, set_as_default=False) as other:
        mine = c.submit(gated_inc, gate, 1)
        theirs = other.submit(gated_inc, gate, 1)
        barrier(other)

        c.cancel(mine, force=True)

        wait_until(theirs.cancelled, what="the other client's future cancelled")
        with pytest.raises(CancelledError):
            theirs.result(timeout=10)
        wait_until(lambda: forgotten(cluster, mine.key))


def test_a_cancelled_key_submitted_again_runs_again(c, gates):
    gate = gates.new()
    future = c.submit(gated_inc, gate, 1)
    c.cancel(future)

    again = c.submit(gated_inc, gate, 1)
    gates.open(gate)

    assert again.result(timeout=10) == 2
    assert not future.cancelled()


# -- 21. fire_and_forget ---------------------------------------------------------------------


def test_fire_and_forget_runs_a_task_whose_futures_are_all_dropped(cluster_and_client, gates):
    c, cluster = cluster_and_client
    name, gate = token(), gates.new()
    upstream = c.submit(gated_inc, gate, 1)
    effect = c.submit(counted_inc, name, upstream)
    effect_key = effect.key

    fire_and_forget(effect)
    del upstream, effect
    gc.collect()
    barrier(c)
    gates.open(gate)

    wait_until(lambda: calls(name) == 1, what="the side effect ran")
    wait_until(lambda: forgotten(cluster, effect_key), what="forgotten after running")


def test_without_fire_and_forget_a_dropped_task_never_runs(cluster_and_client, gates):
    c, cluster = cluster_and_client
    name, gate = token(), gates.new()
    upstream = c.submit(gated_inc, gate, 1)
    effect = c.submit(counted_inc, name, upstream)
    effect_key = effect.key
    # co-assigned: it waits on the worker running upstream
    wait_until(lambda: any(effect_key in w.state.tasks for w in cluster.workers))

    del upstream, effect
    gc.collect()
    wait_until(lambda: forgotten(cluster, effect_key))
    # forgotten by the scheduler is not yet freed on the worker: the free is on its way
    wait_until(lambda: all(effect_key not in w.state.tasks for w in cluster.workers))
    gates.open(gate)
    barrier(c)

    assert calls(name) == 0
