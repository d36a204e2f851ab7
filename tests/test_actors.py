"""Actors on a fakeredis cluster: ``submit(Cls, actor=True)`` gives a proxy whose method
calls return ActorFutures, attribute reads work, calls run one at a time, and a released or
lost actor errs its calls with a message that says so."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from rdist import Actor, ActorFuture, Client
from rdist.actors.calls import ActorLost
from tests.conftest import FakeCluster, fake_cluster


class Counter:
    """dask's documented example."""

    n = 0

    def __init__(self) -> None:
        self.n = 0

    def increment(self) -> int:
        self.n += 1
        return self.n

    def add(self, x: int) -> int:
        self.n += x
        return self.n


class Overlap:
    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.guard = threading.Lock()

    def slow(self) -> int:
        with self.guard:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.guard:
            self.running -= 1
        return self.most


class Waiter:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def wait(self) -> str:
        await self.event.wait()
        return "woken"

    async def set(self) -> None:
        self.event.set()


class Failing:
    def boom(self) -> None:
        raise ValueError("boom inside the actor")


@pytest.fixture
def pair() -> Iterator[tuple[Client, FakeCluster]]:
    with fake_cluster() as pair:
        yield pair


def test_dasks_counter_example_runs_with_only_the_import_changed(pair) -> None:
    c, _ = pair
    future = c.submit(Counter, actor=True)
    counter = future.result(timeout=10)

    assert isinstance(counter, Actor)
    call = counter.increment()
    assert isinstance(call, ActorFuture)
    assert call.result(timeout=5) == 1
    assert counter.add(10).result(timeout=5) == 11
    assert counter.n == 11


def test_calls_run_one_at_a_time_on_the_actors_worker(pair) -> None:
    c, _ = pair
    actor = c.submit(Overlap, actor=True).result(timeout=10)

    calls = [actor.slow() for _ in range(6)]

    assert max(call.result(timeout=10) for call in calls) == 1


def test_async_methods_may_wait_for_one_another(pair) -> None:
    c, _ = pair
    actor = c.submit(Waiter, actor=True).result(timeout=10)

    waiting = actor.wait()
    time.sleep(0.1)
    actor.set().result(timeout=5)

    assert waiting.result(timeout=5) == "woken"


def test_a_failing_method_raises_its_error_at_the_caller(pair) -> None:
    c, _ = pair
    actor = c.submit(Failing, actor=True).result(timeout=10)

    with pytest.raises(ValueError, match="boom inside the actor"):
        actor.boom().result(timeout=5)


def test_an_actor_future_is_awaitable(pair) -> None:
    c, _ = pair
    counter = c.submit(Counter, actor=True).result(timeout=10)

    async def main() -> int:
        return await counter.increment()

    assert asyncio.run(main()) == 1


def test_actors_keep_their_state_apart(pair) -> None:
    c, _ = pair
    a, b = c.submit(Counter, actor=True), c.submit(Counter, actor=True)
    first, second = a.result(timeout=10), b.result(timeout=10)
    first.add(5).result(timeout=5)

    assert second.increment().result(timeout=5) == 1
    assert first.n == 5


def test_an_actor_used_inside_a_task_through_the_workers_client(pair) -> None:
    c, _ = pair
    counter = c.submit(Counter, actor=True).result(timeout=10)

    def bump(actor: Actor) -> int:
        return actor.add(3).result(timeout=5)

    assert c.submit(bump, counter).result(timeout=10) == 3
    assert counter.n == 3


def test_a_lost_worker_errs_the_actors_calls_with_a_clear_message(pair) -> None:
    c, cluster = pair
    counter = c.submit(Counter, actor=True).result(timeout=10)
    counter.increment().result(timeout=5)
    host = next(w for w in cluster.workers if counter._address == w.address)

    host.close()
    deadline = time.monotonic() + 10
    while c.store.workers.exists(host.address) and time.monotonic() < deadline:
        time.sleep(0.05)

    with pytest.raises(ActorLost, match="is lost: its worker .* is gone"):
        counter.increment().result(timeout=10)
