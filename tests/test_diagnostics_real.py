"""The diagnostics against worker processes and a real redis-server: the profiler thread of
a worker process, span totals written by its raw report pipeline, transfers between two
processes, and a performance report of it all."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import rdist
from rdist import Client
from tests.client_helpers import wait_until
from tests.test_diagnostics import array, busy, total

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]


def test_worker_processes_profile_total_spans_and_record_transfers(
    client: Client, tmp_path: Path
) -> None:
    target = tmp_path / "report.html"
    first, second = sorted(client.scheduler_info()["workers"])
    start = time.time()
    with rdist.performance_report(filename=str(target)):
        with rdist.span("crunch") as ident:
            client.gather(client.map(busy, range(4), seconds=0.2))
        a = client.submit(array, 1, workers=[first])
        b = client.submit(array, 2, workers=[second])
        assert client.submit(total, a, b, workers=[first]).result(timeout=30) == 150_000.0

    (totals,) = client.store.spans.get_many([ident]).values()
    assert totals.names == ["crunch"] and totals.count == 4 and totals.duration >= 0.8
    records = client.get_task_stream(start=start)
    moves = [r for r in records if r["startstops"][0]["action"] == "transfer"]
    assert [(m["worker"], m["startstops"][0]["source"]) for m in moves] == [(first, second)]
    # 0.8 s of busy tasks sampled every 10 ms in two processes: ~80 samples on an idle
    # machine, a fraction of that on a loaded one; at least some, and all in "busy". Each
    # profiler sends its samples on its own (within its cycle, or once idle): poll for them
    profiled: list[dict[str, Any]] = []

    def sampled() -> bool:
        profiled[:] = [client.profile(key="busy", start=start)]
        return bool(profiled[0]["count"] >= 4)

    wait_until(sampled, 20, "the busy tasks' samples in Redis")
    assert "busy" in str(profiled[0]["children"])
    page = target.read_text()
    assert '<section id="profile">' in page and '<section id="spans">' in page
