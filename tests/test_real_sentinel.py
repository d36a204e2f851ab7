"""Redis Sentinel: the primary is killed (SIGKILL) in the middle of a graph; Sentinel
promotes the replica, every role finds it through the Sentinels, and every result is
right. Real processes on loopback: a primary, a replica, three Sentinels, a scheduler and
two workers (issue 15, part 3)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from rdist import Client, LocalCluster
from tests.redis_topologies import SentinelSet

pytestmark = pytest.mark.timeout(240)


def slow_double(x: int) -> int:
    time.sleep(0.005)
    return 2 * x


def inc(x: int) -> int:
    return x + 1


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    deployment = SentinelSet().start()
    try:
        yield deployment
    finally:
        deployment.stop()


def test_killing_the_primary_mid_graph_loses_nothing_and_work_resumes(
    sentinels: SentinelSet, capsys: pytest.CaptureFixture[str]
) -> None:
    n = 3000
    old_primary = sentinels.primary_address()
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            redis_url=sentinels.url,
            name=f"sentinel-{uuid.uuid4().hex[:8]}",
            timeout=30,
            nanny=False,
            dashboard_address=None,
        ) as cluster,
        Client(cluster, timeout=30) as client,
    ):
        client.wait_for_workers(2, timeout=30)
        futures = client.map(slow_double, range(n))
        total = client.submit(sum, futures)
        while sum(f.done() for f in futures) < n // 10:
            time.sleep(0.02)
        done_before = sum(f.done() for f in futures)

        killed_at = time.monotonic()
        sentinels.kill_primary()
        # time to resume: from the kill until a task submitted after it has its result
        assert client.submit(inc, 1, pure=False).result(timeout=60) == 2
        resumed = time.monotonic() - killed_at

        assert client.gather(futures) == [2 * x for x in range(n)]
        assert total.result(timeout=60) == 2 * sum(range(n))
        finished = time.monotonic() - killed_at

    assert sentinels.primary_address() != old_primary  # the replica was promoted
    assert done_before < n  # the kill came in the middle of the graph
    with capsys.disabled():
        print(
            f"\n[sentinel fail-over] {n} tasks, primary SIGKILLed after {done_before} done: "
            f"service resumed in {resumed:.2f} s (Sentinel down-after "
            f"{sentinels.down_after_ms} ms), graph finished {finished:.2f} s after the kill, "
            "every result right"
        )
