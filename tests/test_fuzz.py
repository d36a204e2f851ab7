"""Fuzz on fakeredis: generated and mutated entries (``tests/fuzz_entries.py``) written
straight into the scheduler's stream, every worker's stream, the client's stream and the
stored records kill no loop, lose no result, and leave a cluster that computes correctly.

The default tries ``fuzz_entries.DEFAULT_ENTRIES`` entries in all (bounded for CI), split
evenly over the streams and the record kinds; ``RDIST_FUZZ_ENTRIES=300000 pytest -s
tests/test_fuzz.py`` is the full run (at least 10,000 for each). ``-s`` prints the figures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

import pytest

from rdist.client.future import wait
from rdist.protocol import wire
from rdist.scheduler.server import SchedulerServer
from rdist.web import queries
from tests import fuzz_entries as fz
from tests import fuzz_runs as fr
from tests.client_helpers import wait_until
from tests.conftest import fake_cluster

#: The in-process scheduler's lease: it shares one interpreter with the fuzz writer, the
#: workers, the client and fakeredis, and on a loaded machine its renewing thread can
#: starve for the default 2 s (a scheduler process of its own is fuzzed with the default
#: in ``tests/test_fuzz_real.py``).
LEASE_TTL_MS = 15_000


def inc(x: int) -> int:
    return x + 1


def slow_inc(x: int) -> int:
    time.sleep(0.005)
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


class LoopFailures(logging.Handler):
    """Errors logged by rdist while the fuzz runs: a loop that failed and started again,
    a scheduler that failed while leading (a bad entry must be a dead letter instead)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.handled: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "starting it again" in text or "failed while leading" in text:
            self.records.append(record)
        elif record.exc_info is not None:  # an error handled and answered (not a loop's)
            self.handled[text[:80]] += 1


def rdist_threads(ignore: frozenset[int] = frozenset()) -> Counter[str]:
    """rdist threads by name, leaving out ``ignore`` (threads of earlier tests, which may
    end at any time during this one)."""
    return Counter(
        t.name
        for t in threading.enumerate()
        if t.name.startswith("rdist") and t.ident not in ignore
    )


def lost_threads(before: Counter[str], ignore: frozenset[int]) -> int:
    now = rdist_threads(ignore)
    return sum(max(0, n - now[name]) for name, n in before.items())


@pytest.mark.timeout(fz.TIMEOUT)
def test_fuzzed_streams_and_records_kill_no_loop_and_lose_no_result(capsys: Any) -> None:
    failures = LoopFailures()
    logging.getLogger("rdist").addHandler(failures)
    tally = fr.Tally()
    earlier = frozenset(t.ident for t in threading.enumerate() if t.ident is not None)
    try:
        with fake_cluster(n_workers=2) as (client, cluster):
            store, redis = client.store, client.store.redis
            keys = store.keys
            cluster.scheduler.lease.ttl_ms = LEASE_TTL_MS
            before = client.map(slow_inc, range(200))  # running while the fuzz arrives
            threads = rdist_threads(earlier)
            lapses: list[float] = []

            def alive() -> None:
                assert cluster._thread.is_alive()
                if not cluster.scheduler.is_leader.is_set():
                    # a lease that lapsed while this one process, on a loaded machine,
                    # starved its renewing thread: the scheduler stands by and leads again
                    lapses.append(time.monotonic())
                    wait_until(cluster.scheduler.is_leader.is_set, timeout=30, what="leading")
                for worker in cluster.workers:
                    assert not worker.stop_event.is_set(), worker.name
                    assert all(t.is_alive() for t in worker.threads), worker.name
                assert client.status == "running"
                assert all(t.is_alive() for t in client._threads)

            targets = {"scheduler": (keys.sched, wire.SCHEDULER)}
            for worker in cluster.workers:
                targets[f"worker {worker.name}"] = (keys.worker_stream(worker.address), wire.WORKER)
            targets["client"] = (keys.client_stream(client.id), wire.CLIENT)
            streams, per_record = fr.split(fz.ENTRIES, targets)
            letters = fr.DeadLetterCount(redis, keys.deadletter)
            started = time.monotonic()
            with letters:
                fr.fuzz_streams(redis, targets, streams, tally, alive)
                fr.fuzz_records(redis, keys, per_record, tally, alive, cluster.workers[0].address)
                fuzz_seconds = time.monotonic() - started
                after = _after_the_fuzz(client, cluster, store, before)
            total_seconds = time.monotonic() - started
            alive()
            lost = lost_threads(threads, earlier)
            some_letters = store.streams.dead_letters(20)
    finally:
        logging.getLogger("rdist").removeHandler(failures)
    messages = [r.getMessage()[:200] for r in failures.records]
    with capsys.disabled():
        print()
        print(
            tally.report(
                f"fakeredis, {fuzz_seconds:.1f} s of fuzz, {total_seconds:.1f} s in all",
                letters,
                process_exits=0,
                threads_lost=lost,
                results_lost=after,
                lease_lapses=len(lapses),
                loop_failures_logged=len(messages),
                handled_errors_logged=dict(failures.handled),
            )
        )
    fuzzed = [*targets, *map(fr.record_target, fr.RECORD_HOMES)]
    assert min(tally.tried[t] for t in fuzzed) >= per_record, tally.tried
    assert lost == 0 and after == 0
    assert letters.total > 0 and {"sched", "worker", "client"} <= set(letters.by_stream)
    assert all(d["reason"] for d in some_letters)
    assert not messages, messages[:5]


def _after_the_fuzz(client: Any, cluster: Any, store: Any, before: list[Any]) -> int:
    """What reads the stored records, a scheduler taking over from them, and the
    computations: the results lost of those submitted before the fuzz (asserting that a
    fresh computation is right)."""
    info = client.scheduler_info()
    assert set(info["workers"]) == {w.address for w in cluster.workers}
    queries.workers(store)
    queries.tasks_page(store)
    queries.recent_runs(store)
    queries.events_page(store)
    assert cluster.workers[0].address in client.get_worker_logs()
    cluster.scheduler.stop()
    cluster._thread.join(timeout=10)
    cluster.scheduler = SchedulerServer.from_url(
        cluster.url, cluster.cluster_name, lease_ttl_ms=LEASE_TTL_MS
    )
    cluster._thread = threading.Thread(target=cluster.scheduler.run, daemon=True)
    cluster._thread.start()
    wait_until(cluster.scheduler.is_leader.is_set, timeout=20, what="new leader")
    wait(before, timeout=120)
    lost = sum(1 for i, r in enumerate(client.gather(before)) if r != i + 1)
    fresh = client.map(inc, range(100))
    wait(fresh, timeout=120)
    assert client.gather(fresh) == list(range(1, 101))
    [x] = client.scatter([41])
    assert client.submit(add, x, 1).result(timeout=60) == 42
    return lost


class StubNanny:
    """What a nanny's plugins see of it: an address, the next worker's environment."""

    address = ""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.restarts = 0

    def restart_worker(self) -> None:
        self.restarts += 1


@pytest.mark.timeout(fz.TIMEOUT)
def test_fuzzed_nanny_stream_kills_no_nanny_thread(capsys: Any) -> None:
    from rdist.plugins.nanny_side import NannyPlugins
    from tests.extension_tasks import NANNY_MARK, EnvNannyPlugin

    failures = LoopFailures()
    logging.getLogger("rdist").addHandler(failures)
    tally = fr.Tally()
    earlier = frozenset(t.ident for t in threading.enumerate() if t.ident is not None)
    try:
        with fake_cluster(n_workers=1) as (client, cluster):
            stub = StubNanny()
            nanny = NannyPlugins(stub, cluster.url, cluster.cluster_name)
            nanny.start()
            try:
                threads = [t for t in threading.enumerate() if t.ident not in earlier]
                threads = [t for t in threads if t.name.startswith("rdist-nanny")]
                assert sorted(t.name for t in threads) == ["rdist-nanny-beat", "rdist-nanny-in"]

                def alive() -> None:
                    assert all(t.is_alive() for t in threads)

                stream = client.store.keys.nanny_stream(nanny.id)
                targets = {"nanny": (stream, wire.NANNY)}
                redis = client.store.redis
                letters = fr.DeadLetterCount(redis, client.store.keys.deadletter)
                started = time.monotonic()
                with letters:
                    fr.fuzz_streams(redis, targets, {"nanny": fz.NANNY_ENTRIES}, tally, alive)
                    fuzz_seconds = time.monotonic() - started
                    # the nanny still reads its stream: a plugin registered now is set up
                    answer = client.register_plugin(EnvNannyPlugin("after-the-fuzz"), name="mark")
                alive()
            finally:
                nanny.stop()
    finally:
        logging.getLogger("rdist").removeHandler(failures)
    with capsys.disabled():
        print()
        print(
            tally.report(
                f"fakeredis, one nanny's stream, {fuzz_seconds:.1f} s of fuzz",
                letters,
                threads_lost=0,
                plugin_after=answer,
            )
        )
    assert tally.total >= fz.NANNY_ENTRIES
    assert answer == {nanny.id: {"status": "OK"}}
    assert stub.env[NANNY_MARK] == "after-the-fuzz"
    assert letters.by_stream["nanny"] > 0
    assert not failures.records, [r.getMessage()[:200] for r in failures.records[:5]]
