"""Fuzz on a real Redis: the generated and mutated entries of ``tests/fuzz_entries.py``
written into the streams and stored records of a ``LocalCluster`` -- a scheduler process
and two worker processes -- and of this process's client. Afterwards no process has
exited, the client's threads live, every result submitted before is right and a fresh
computation is correct. ``RDIST_FUZZ_ENTRIES`` sets the number tried, split evenly over
the streams and the record kinds (``RDIST_FUZZ_ENTRIES=300000``: at least 10,000 each;
``-s`` prints the figures)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from rdist.client.future import wait
from rdist.protocol import wire
from tests import fuzz_entries as fz
from tests import fuzz_runs as fr

ENTRIES = fz.ENTRIES


def inc(x: int) -> int:
    return x + 1


def slow_inc(x: int) -> int:
    time.sleep(0.005)
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def processes(cluster: Any) -> dict[str, Any]:
    procs = {"scheduler": cluster._scheduler}
    for worker in cluster._workers:
        procs[f"worker {worker.name}"] = worker.process
    return procs


@pytest.mark.timeout(fz.TIMEOUT)
def test_fuzzed_streams_and_records_exit_no_process_and_lose_no_result(
    cluster: Any, client: Any, subprocess_pythonpath: None, capsys: Any
) -> None:
    store, redis = client.store, client.store.redis
    keys = store.keys
    procs = processes(cluster)
    assert len(procs) == 3 and all(p.poll() is None for p in procs.values())
    before = client.map(slow_inc, range(200))
    tally = fr.Tally()

    def alive() -> None:
        exited = {name: p.returncode for name, p in procs.items() if p.poll() is not None}
        assert not exited, exited
        assert client.status == "running" and all(t.is_alive() for t in client._threads)

    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    targets = {"scheduler": (keys.sched, wire.SCHEDULER)}
    for i, address in enumerate(workers):
        targets[f"worker {i}"] = (keys.worker_stream(address), wire.WORKER)
    targets["client"] = (keys.client_stream(client.id), wire.CLIENT)
    streams, per_record = fr.split(ENTRIES, targets)
    letters = fr.DeadLetterCount(redis, keys.deadletter)
    started = time.monotonic()
    with letters:
        fr.fuzz_streams(redis, targets, streams, tally, alive)
        fr.fuzz_records(redis, keys, per_record, tally, alive, workers[0])
        fuzz_seconds = time.monotonic() - started

        assert sorted(client.scheduler_info()["workers"]) == workers
        assert set(client.get_worker_logs()) == set(workers)
        wait(before, timeout=120)
        lost = sum(1 for i, r in enumerate(client.gather(before)) if r != i + 1)
        fresh = client.map(inc, range(100))
        wait(fresh, timeout=120)
        assert client.gather(fresh) == list(range(1, 101))
        [x] = client.scatter([41])
        assert client.submit(add, x, 1).result(timeout=60) == 42
    total_seconds = time.monotonic() - started
    alive()
    exits = sum(1 for p in procs.values() if p.poll() is not None)
    with capsys.disabled():
        print()
        print(
            tally.report(
                f"real Redis, LocalCluster processes, {fuzz_seconds:.1f} s of fuzz, "
                f"{total_seconds:.1f} s in all",
                letters,
                process_exits=exits,
                threads_lost=0,
                results_lost=lost,
            )
        )
    fuzzed = [*targets, *map(fr.record_target, fr.RECORD_HOMES)]
    assert min(tally.tried[t] for t in fuzzed) >= per_record, tally.tried
    assert exits == 0 and lost == 0
    assert {"sched", "worker", "client"} <= set(letters.by_stream)


@pytest.mark.timeout(fz.TIMEOUT)
def test_fuzzed_nanny_stream_exits_no_nanny_and_it_still_sets_up_plugins(
    redis_url: str, subprocess_pythonpath: None, capsys: Any
) -> None:
    from rdist import Client, LocalCluster
    from tests.extension_tasks import EnvNannyPlugin

    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            nanny=True,
            redis_url=redis_url,
            dashboard_address=None,
        ) as cluster,
        Client(cluster, timeout=30) as client,
    ):
        client.wait_for_workers(1, timeout=60)
        store = client.store
        [nanny_id] = store.plugins.nannies()
        [process] = [w.process for w in cluster._workers]
        [worker_pid] = client.run(os.getpid).values()
        tally = fr.Tally()

        def alive() -> None:
            assert process.poll() is None, process.returncode
            os.kill(worker_pid, 0)  # the nanny's worker lives on (ProcessLookupError if not)

        targets = {"nanny": (store.keys.nanny_stream(nanny_id), wire.NANNY)}
        letters = fr.DeadLetterCount(store.redis, store.keys.deadletter)
        started = time.monotonic()
        with letters:
            fr.fuzz_streams(store.redis, targets, {"nanny": fz.NANNY_ENTRIES}, tally, alive)
            fuzz_seconds = time.monotonic() - started
            # the nanny still reads its stream: a plugin registered now is set up by it
            answer = client.register_plugin(EnvNannyPlugin("after-the-fuzz"), name="mark")
        alive()
        assert client.submit(inc, 1, pure=False).result(timeout=30) == 2
    with capsys.disabled():
        print()
        print(
            tally.report(
                f"real Redis, one nanny process, {fuzz_seconds:.1f} s of fuzz",
                letters,
                process_exits=0,
                plugin_after=answer,
            )
        )
    assert tally.total >= fz.NANNY_ENTRIES
    assert answer == {nanny_id: {"status": "OK"}}
    assert letters.by_stream["nanny"] > 0
