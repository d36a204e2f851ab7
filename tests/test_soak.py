"""Soak: waves of work from many clients (distinct closures, cancellations, releases
mid-run, clients that close and clients that vanish) leave Redis as it was when idle.

The default runs in CI (``RDIST_SOAK_TASKS``, 20,000 tasks); the issue's million-task
soak is the same test with ``RDIST_SOAK_TASKS=1000000``. Scheduler and workers are
threads of this process on a real Redis (``used_memory`` means something only there).
The capped keys are measured by deleting them, not by ``MEMORY USAGE`` (see
:func:`without_capped_at_end`): its sampled estimate of the task stream once passed for
megabytes "outside any key" that were never there.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rdist import Client
from rdist.embedded import EmbeddedRedis
from rdist.logbuffer import log_length
from rdist.scheduler.model import FIRE_AND_FORGET
from rdist.scheduler.server import SchedulerServer
from rdist.store import connect
from rdist.store.diagnostics import PROFILE_MAXLEN
from rdist.store.streams import (
    EVENTS_MAXLEN,
    HEARTBEATS_MAXLEN,
    TASKSTREAM_RUNS,
    TASKSTREAM_SLACK,
    TASKSTREAM_TRIM_EVERY,
)
from rdist.worker.server import Worker
from tests.client_helpers import wait_until
from tests.conftest import free_port

TASKS = int(os.environ.get("RDIST_SOAK_TASKS", "20000"))
CLIENTS_PER_WAVE = 4
TASKS_PER_CLIENT = 1000  #: one wave: this many tasks from each client
#: what "back to idle" allows (the issue's bound): bytes of used_memory, keys
MEMORY_SLACK, KEY_SLACK = 1 << 20, 50


def make_step(wave: int, n: int) -> Any:
    def step(x: int) -> int:  # a distinct closure (and function hash) per client and wave
        return x + wave + n

    return step


def slow(x: int) -> int:
    time.sleep(0.002)
    return x


@contextmanager
def threaded_cluster(url: str, name: str, n_workers: int = 2) -> Iterator[SchedulerServer]:
    # The scheduler shares this process (and its GIL) with four clients and two workers:
    # on a loaded machine a lease renewal can come more than the default 2 s late, and a
    # lost lease is a fail-over (new epoch, every graph re-submitted), tested elsewhere
    # and not what this test measures.
    scheduler = SchedulerServer.from_url(url, name, lease_ttl_ms=30_000)
    # a vanished client is noticed within the test (a live one beats every 5 s)
    scheduler.client_ttl = 10.0
    thread = threading.Thread(target=scheduler.run, daemon=True)
    thread.start()
    workers = [Worker(connect(url, name), nthreads=2, name=f"w{i}") for i in range(n_workers)]
    for worker in workers:
        worker.start()
    try:
        yield scheduler
    finally:
        for worker in workers:
            worker.close()
        scheduler.stop()
        thread.join(timeout=5)


def vanish(client: Client) -> None:
    """The client's process dies: no leave message, no cleanup, its heartbeat stops."""
    client._stop.set()
    client._sender.wake()
    client._inbox.wake()
    for thread in client._threads:
        thread.join(timeout=2)
    client.status = "closed"
    client.store.close()


def one_client(url: str, name: str, wave: int, n: int, vanishes: bool) -> int:
    client = Client(url, cluster_name=name, set_as_default=False)
    step = make_step(wave, n)
    futures = client.map(step, range(TASKS_PER_CLIENT), pure=False)
    doomed = client.map(slow, range(50), pure=False)
    client.cancel(doomed[:25])  # cancelled, some while running
    del doomed  # the rest released mid-run
    total = int(sum(client.gather(futures[: TASKS_PER_CLIENT // 2])))
    if vanishes:
        vanish(client)
    else:
        del futures  # half released without ever being gathered
        client.close()
    return total


def capped_keys(store: Any) -> dict[str, int]:
    """The keys that grow with the work up to a cap, whatever the work -- bounded, not a
    leak: name -> the most entries (streams, MAXLEN ~) or lines (log lists) it may hold."""
    keys = store.keys
    caps = {
        # capped in runs (each entry holds one or more, so its entries are fewer still),
        # trimmed by each writer every TASKSTREAM_TRIM_EVERY runs (a few writers here)
        keys.taskstream: TASKSTREAM_RUNS + TASKSTREAM_SLACK + 4 * TASKSTREAM_TRIM_EVERY,
        keys.heartbeats: HEARTBEATS_MAXLEN,
        keys.events: EVENTS_MAXLEN,
        keys.profile: PROFILE_MAXLEN,
    }
    for name in store.redis.scan_iter(match=keys._k("logs:*"), _type="list"):
        caps[name.decode()] = log_length()
    return caps


def used_memory(store: Any) -> int:
    return int(store.redis.info("memory")["used_memory"])


def without_capped_at_idle(store: Any) -> int:
    """``used_memory`` less the capped keys, at the idle baseline. ``MEMORY USAGE ...
    SAMPLES 0`` counts every node of a key; on these few small keys it errs by a few KB,
    and on the high side (its radix-tree estimate), which only makes the bound stricter."""
    capped = sum(store.redis.memory_usage(name, samples=0) or 0 for name in capped_keys(store))
    return used_memory(store) - capped


def without_capped_at_end(store: Any) -> tuple[int, int]:
    """``(used_memory, the same without the capped keys)`` at the end, exactly: the capped
    keys are checked against their caps, then deleted in one transaction between two
    ``INFO memory`` (Redis frees a DEL's value at once), so the second figure is all the
    rest -- every other key, clients, scripts, Redis's own tables -- to the byte.

    Not ``MEMORY USAGE``: it estimates a stream from its first 5 nodes by default (the
    task stream's report batches differ in size: 6.96 MB said, 9.26 MB freed after
    100,800 tasks), and even with ``SAMPLES 0`` its radix-tree estimate is ~3 % high (1.5
    MB on the task stream after 1M tasks): either would move the result by more than the
    bound."""
    caps = capped_keys(store)
    for name, cap in caps.items():
        kind = store.redis.type(name).decode()
        # MAXLEN ~ trims whole nodes: up to one node (100 entries) more than the cap
        held = store.redis.xlen(name) if kind == "stream" else store.redis.llen(name)
        assert held <= cap + (100 if kind == "stream" else 0), (name, held, cap)
    pipe = store.redis.pipeline(transaction=True)
    pipe.info("memory")
    pipe.delete(*caps)
    pipe.info("memory")
    with_capped, _, without = pipe.execute()
    return int(with_capped["used_memory"]), int(without["used_memory"])


def memory_stats(store: Any) -> dict[str, int]:
    """``MEMORY STATS`` as flat numeric fields (``db.0.overhead.hashtable.main``, ...):
    where Redis's memory sits besides the keys (clients, script cache, dict tables)."""
    flat: dict[str, int] = {}

    def walk(prefix: str, fields: Any) -> None:
        pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2])
        for name, value in pairs:
            field = prefix + (name.decode() if isinstance(name, bytes) else str(name))
            if isinstance(value, (list, dict)):
                walk(field + ".", value)
            elif isinstance(value, int):
                flat[field] = value

    walk("", store.redis.execute_command("MEMORY", "STATS"))
    return flat


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis of its own: the figures are those of this test alone."""
    server = EmbeddedRedis(port=free_port()).start()
    yield server.url
    server.stop()


#: pytest's default timeout (120 s) is for CI's 20,000 tasks; a longer soak gets longer
@pytest.mark.timeout(120 + TASKS // 100)
def test_waves_of_work_leave_redis_as_idle_as_it_was(redis_url: str) -> None:
    name = f"soak-{uuid.uuid4().hex[:8]}"
    store = connect(redis_url, name)
    with threaded_cluster(redis_url, name) as scheduler:
        warm = Client(redis_url, cluster_name=name, set_as_default=False)
        warm.wait_for_workers(2, timeout=10)
        assert warm.submit(make_step(-1, 0), 1).result(timeout=10) == 0
        warm.close()
        wait_until(lambda: not scheduler.state.tasks, what="warm-up forgotten")
        gc.collect()
        memory_before, idle_rest, keys_before = (
            used_memory(store),
            without_capped_at_idle(store),
            int(store.redis.dbsize()),
        )
        stats_before = memory_stats(store)

        started, done, wave = time.monotonic(), 0, 0
        while done < TASKS:
            results = [0] * CLIENTS_PER_WAVE

            def run(n: int, wave: int = wave, results: list[int] = results) -> None:
                results[n] = one_client(redis_url, name, wave, n, vanishes=n == 0)

            threads = [threading.Thread(target=run, args=(n,)) for n in range(CLIENTS_PER_WAVE)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert not [t for t in threads if t.is_alive()], f"a client of wave {wave} hangs"
            half = TASKS_PER_CLIENT // 2
            assert results == [sum(range(half)) + half * (wave + n) for n in range(4)]
            done += CLIENTS_PER_WAVE * (TASKS_PER_CLIENT + 50)
            wave += 1
        gc.collect()
        wait_until(lambda: not scheduler.state.tasks, timeout=30, what="every task forgotten")
        wait_until(
            lambda: not set(scheduler.state.clients) - {FIRE_AND_FORGET},
            timeout=30,
            what=f"every client gone: {scheduler.state.clients}",
        )
        wait_until(lambda: store.redis.dbsize() <= keys_before + KEY_SLACK, timeout=30)
        # the scheduler forgets in memory first, then writes the batch's deletes
        records = (store.keys.funcs, store.keys.specs, store.keys.results, store.keys.tasks)
        wait_until(
            lambda: not any(store.redis.hlen(k) for k in records),
            timeout=30,
            what="the forgotten tasks' records deleted",
        )
        time.sleep(0.5)  # the last writes of the streams' trimming
        elapsed = time.monotonic() - started
        leftover = sorted(k.decode() for k in store.redis.keys("*"))
        sizes = {k: store.redis.memory_usage(k, samples=0) for k in leftover}
        memory_after, end_rest = without_capped_at_end(store)
        stats_after = memory_stats(store)

    deltas = {f: v - stats_before.get(f, 0) for f, v in stats_after.items()}
    moved = {f: d for f, d in deltas.items() if d}
    print(f"\nsoak: MEMORY STATS deltas without the capped keys {moved}")
    print(f"\nsoak: bytes per key (MEMORY USAGE SAMPLES 0) {sizes}")
    print(
        f"\nsoak: {done} tasks, {wave} waves of {CLIENTS_PER_WAVE} clients in {elapsed:.1f} s; "
        f"used_memory {memory_before} -> {memory_after} B ({idle_rest} -> {end_rest} B "
        f"without the capped keys: {end_rest - idle_rest:+d} B), keys {keys_before} -> "
        f"{len(leftover)}: {leftover}"
    )
    assert store.redis.hlen(store.keys.funcs) == 0
    assert store.redis.hlen(store.keys.specs) == 0
    assert store.redis.hlen(store.keys.results) == 0
    assert store.redis.hlen(store.keys.tasks) == 0
    assert len(leftover) <= keys_before + KEY_SLACK, leftover
    assert not [k for k in leftover if ":client:" in k]  # no client stream stays
    assert end_rest <= idle_rest + MEMORY_SLACK
    store.close()
