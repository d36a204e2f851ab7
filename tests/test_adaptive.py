"""The adaptive rule (rdist.adaptive): how many workers the work wants, and which
workers can leave cheaply -- dask's ``adaptive_target`` and ``workers_to_close``."""

from __future__ import annotations

from rdist.adaptive import (
    SAMPLE,
    UNKNOWN_DURATION,
    Load,
    WorkerLoad,
    adaptive_target,
    cpu_target,
    group_name,
    memory_target,
    queued_occupancy,
    workers_to_close,
)


def workers(n: int, nthreads: int = 1, **kwargs: object) -> tuple[WorkerLoad, ...]:
    return tuple(WorkerLoad(f"tcp://w:{i}", nthreads, **kwargs) for i in range(n))  # type: ignore[arg-type]


def test_no_work_and_no_workers_wants_no_worker():
    assert adaptive_target(Load()) == 0


def test_queued_work_on_an_empty_cluster_wants_at_least_one_worker():
    load = Load(queued={"inc": 1}, durations={"inc": 0.001})

    assert adaptive_target(load) == 1


def test_queued_seconds_over_the_target_duration_are_the_threads_wanted():
    # 40 tasks of 1 s with a 5 s target: 8 threads -> 8 one-thread workers
    load = Load(queued={"slow": 40}, durations={"slow": 1.0}, workers=workers(2))

    assert cpu_target(load, target_duration=5.0) == 8
    assert adaptive_target(load, target_duration=5.0) == 8


def test_threads_become_workers_at_the_clusters_threads_per_worker():
    load = Load(queued={"slow": 40}, durations={"slow": 1.0}, workers=workers(2, nthreads=4))

    assert adaptive_target(load, target_duration=5.0) == 2  # 8 threads / 4 per worker


def test_a_few_long_tasks_ask_for_no_more_workers_than_tasks():
    load = Load(queued={"long": 3}, durations={"long": 600.0}, workers=workers(1))

    assert adaptive_target(load) == 3


def test_unknown_groups_count_with_the_default_duration():
    load = Load(queued={"new": 20}, workers=workers(1))

    assert queued_occupancy(load) == 20 * UNKNOWN_DURATION
    assert adaptive_target(load, target_duration=1.0) == 10


def test_a_long_queue_is_sampled_and_extrapolated():
    load = Load(queued={"a": 3 * SAMPLE}, durations={"a": 0.1})

    assert queued_occupancy(load) == 3 * SAMPLE * 0.1


def test_processing_work_counts_toward_the_target():
    busy = tuple(WorkerLoad(f"tcp://w:{i}", 1, processing=10, occupancy=10.0) for i in range(2))

    assert adaptive_target(Load(workers=busy), target_duration=5.0) == 4


def test_memory_pressure_asks_for_twice_the_workers():
    full = workers(3, memory_limit=100, nbytes=70, processing=1)

    assert memory_target(Load(workers=full)) == 6
    assert adaptive_target(Load(workers=full)) == 6


def test_idle_cluster_without_data_shrinks_to_no_worker():
    assert adaptive_target(Load(workers=workers(4))) == 0


def test_idle_cluster_holding_data_keeps_a_worker_for_it():
    held = (WorkerLoad("tcp://a:1", nbytes=10), *workers(3))

    assert adaptive_target(Load(workers=held)) == 1


def test_workers_to_close_skips_busy_workers_and_keeps_one():
    load = Load(
        workers=(
            WorkerLoad("tcp://a:1", processing=2),
            WorkerLoad("tcp://b:1"),
            WorkerLoad("tcp://c:1"),
        )
    )

    assert workers_to_close(load) == ["tcp://b:1", "tcp://c:1"]
    assert workers_to_close(Load(workers=workers(1))) == []


def test_workers_to_close_takes_those_holding_least_data_first_down_to_the_target():
    load = Load(
        workers=(
            WorkerLoad("tcp://a:1", nbytes=300),
            WorkerLoad("tcp://b:1", nbytes=10),
            WorkerLoad("tcp://c:1", nbytes=20),
        )
    )

    assert workers_to_close(load, target=2) == ["tcp://b:1"]


def test_workers_to_close_keeps_memory_for_the_data():
    # 3 workers of 100 bytes holding 90 in all: two must stay (2 x 90 > 100)
    load = Load(workers=workers(3, memory_limit=100, nbytes=30))

    assert len(workers_to_close(load)) == 1


def test_scale_down_target_follows_workers_to_close():
    load = Load(workers=(WorkerLoad("tcp://a:1", processing=1), *workers(3)))

    assert adaptive_target(load, target_duration=5.0) == 1  # only the busy worker stays


def test_group_names_are_daskish_key_splits():
    assert group_name("inc-3f2a9c0d1e2f3a4b5c6d7e8f90a1b2c3") == "inc"
    assert group_name("('x-1f2e3d4c', 3)") == "x"
    assert group_name("load-data-7") == "load-data"
    assert group_name("plain") == "plain"
