"""The adaptive target as the dashboard serves it (``/api/adaptive``, ``/metrics``) and
as :mod:`rdist.adapt` measures it from Redis, on fakeredis."""

from __future__ import annotations

import time

from rdist import adapt
from rdist.protocol import wire
from tests.test_web import app_for, fake_store, put_tasks


def put_worker(store, address: str, nthreads: int = 1) -> None:
    store.redis.hset(
        store.keys.workers,
        address,
        wire.pack(
            {"address": address, "name": address, "nthreads": nthreads, "last_seen": time.time()}
        ),
    )


def queued(n: int) -> dict[str, dict[str, object]]:
    return {f"work-{i}": {"s": "queued"} for i in range(n)}


def test_measure_counts_queued_tasks_by_group_and_processing_by_worker():
    with fake_store() as store:
        put_worker(store, "tcp://h:1")
        put_tasks(store, {**queued(3), "other-1": {"s": "processing", "on": "tcp://h:1"}})

        load = adapt.measure(store)

    assert load.queued == {"work": 3}
    assert [(w.address, w.processing) for w in load.workers] == [("tcp://h:1", 1)]


def test_api_adaptive_serves_the_target_and_its_inputs():
    with fake_store() as store:
        put_worker(store, "tcp://h:1")
        put_tasks(store, queued(40))  # 40 x 0.5 s (unknown duration) / 5 s: 4 workers

        answer = app_for(store).test_client().get("/api/adaptive").get_json()

    assert answer["adaptive_target"] == 4
    assert answer["queued"] == 40 and answer["workers"] == 1


def test_metrics_carry_the_adaptive_target():
    with fake_store() as store:
        put_worker(store, "tcp://h:1")
        put_tasks(store, queued(40))

        text = app_for(store).test_client().get("/metrics").get_data(as_text=True)

    assert "# TYPE rdist_adaptive_target gauge" in text
    assert "rdist_adaptive_target 4" in text


def test_an_idle_cluster_wants_no_worker():
    with fake_store() as store:
        for i in range(3):
            put_worker(store, f"tcp://h:{i}")

        assert adapt.status(store)["adaptive_target"] == 0
