"""Root tasks beside their siblings (``placement.beside_siblings``): the inputs of one
dependent meet on one worker -- ``x[i, j]`` and ``x[j, i]`` of ``x + x.T`` -- so the
dependent needs no transfer, without piling linked roots onto one worker."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from rdist.scheduler.events import (
    Compute,
    FinishedTask,
    GraphSubmitted,
    Instruction,
    TasksFinished,
    TaskSpecMeta,
    WorkerJoined,
)
from rdist.scheduler.state import SchedulerState

W1, W2 = "tcp://10.0.0.1:1", "tcp://10.0.0.2:1"
A = "client-a"
_ids = itertools.count()


def sid() -> str:
    return f"siblings-{next(_ids)}"


def joined(address: str, nthreads: int = 1) -> WorkerJoined:
    return WorkerJoined(sid(), 0.0, address, address, nthreads)


def graph(*tasks: TaskSpecMeta) -> GraphSubmitted:
    return GraphSubmitted(sid(), 0.0, A, list(tasks), [m.key for m in tasks])


def task(key: str, *deps: str, **kwargs: Any) -> TaskSpecMeta:
    return TaskSpecMeta(key, list(deps), **kwargs)


def finished(worker: str, *keys: str, duration: float = 1.0) -> TasksFinished:
    done = [FinishedTask(k, 8, False, None, duration) for k in keys]
    return TasksFinished(sid(), 0.0, worker, done)


def placed(out: list[Instruction]) -> dict[str, str]:
    return {i.key: i.worker for i in out if isinstance(i, Compute)}


@pytest.fixture
def state() -> Iterator[SchedulerState]:
    s = SchedulerState()
    yield s
    s.validate_state()


def transpose_graph(n: int) -> list[TaskSpecMeta]:
    """``x + x.T`` of an ``n`` x ``n`` grid of chunks in dask's order: the pair
    ``x-i.j``, ``x-j.i`` side by side, then the sum of the pair."""
    tasks = []
    for i in range(n):
        for j in range(i, n):
            tasks.append(task(f"x-{i}.{j}"))
            if i != j:
                tasks.append(task(f"x-{j}.{i}"))
            tasks.append(task(f"s-{i}.{j}", f"x-{i}.{j}", f"x-{j}.{i}"))
            if i != j:
                tasks.append(task(f"s-{j}.{i}", f"x-{j}.{i}", f"x-{i}.{j}"))
    return tasks


def test_the_two_inputs_of_a_dependent_start_on_one_worker(state):
    state.handle(joined(W1), joined(W2))

    out = state.handle(graph(task("a"), task("b"), task("c", "a", "b")))

    where = placed(out)
    assert where["a"] == where["b"] == where["c"]  # c co-assigned: nothing to fetch
    (c,) = [i for i in out if isinstance(i, Compute) and i.key == "c"]
    assert c.deps == {"a": ([], 0, False), "b": ([], 0, False)}


def test_transposed_chunk_pairs_meet_on_one_worker_and_both_workers_work(state):
    state.handle(joined(W1), joined(W2))
    state.durations["x"] = state.durations["s"] = 0.0001  # all in flight at once

    out = state.handle(graph(*transpose_graph(8)))

    where = placed(out)
    for i, j in itertools.product(range(8), repeat=2):
        assert where[f"x-{i}.{j}"] == where[f"x-{j}.{i}"] == where[f"s-{i}.{j}"]
    roots = [w for k, w in where.items() if k.startswith("x-")]
    assert min(roots.count(W1), roots.count(W2)) >= 16  # of 64


def test_pairs_queued_for_room_still_meet_when_a_worker_frees_up(state):
    state.handle(joined(W1))
    # unknown durations: one task a thread (a diagonal chunk and its sum); the rest queue
    out = state.handle(graph(*transpose_graph(3)))
    assert placed(out) == {"x-0.0": W1, "s-0.0": W1}
    assert state.tasks["x-0.1"].state.value == "queued"

    out = state.handle(joined(W2))

    assert placed(out) == {"x-0.1": W2, "x-1.0": W2, "s-0.1": W2, "s-1.0": W2}

    out = state.handle(finished(W1, "x-0.0", "s-0.0"))

    assert placed(out) == {"x-0.2": W1, "x-2.0": W1, "s-0.2": W1, "s-2.0": W1}


def test_roots_linked_in_a_row_fill_one_worker_then_the_next(state):
    state.handle(joined(W1), joined(W2))
    state.durations["r"] = state.durations["w"] = 0.001
    roots = [task(f"r-{i}") for i in range(200)]
    windows = [task(f"w-{i}", f"r-{i}", f"r-{i + 1}") for i in range(199)]
    order = [roots[0]] + [t for pair in zip(roots[1:], windows) for t in pair]

    where = placed(state.handle(graph(*order)))

    on = [where.get(f"r-{i}") for i in range(200)]
    assert 40 <= on.count(W1) <= 160 and 40 <= on.count(W2) <= 160
    switches = sum(1 for a, b in zip(on, on[1:]) if a != b)
    assert switches < 20  # blocks of neighbours, not alternating


def test_roots_of_a_wide_reduction_are_spread_not_gathered(state):
    state.handle(joined(W1), joined(W2))
    state.durations["r"] = 0.001
    roots = [task(f"r-{i}") for i in range(10)]  # more inputs than SIBLING_FANIN

    out = state.handle(graph(*roots, task("total", *(r.key for r in roots))))

    assert list(placed(out).values()).count(W1) == 5  # spread as independent tasks


def test_a_root_follows_a_sibling_already_in_memory(state):
    state.handle(joined(W1), joined(W2))
    state.handle(graph(task("a", workers=[W2])))
    state.handle(finished(W2, "a"))

    out = state.handle(graph(task("b"), task("c", "a", "b")))

    assert placed(out) == {"b": W2, "c": W2}


def test_a_sibling_worker_past_twice_its_room_is_not_followed(state):
    state.handle(joined(W1), joined(W2))
    state.durations["a"] = state.durations["busy"] = 0.01  # all four run on W1 at once
    busy = [task(f"busy-{i}", workers=[W1]) for i in range(3)]
    state.handle(graph(task("a", workers=[W1]), *busy))

    out = state.handle(graph(task("b"), task("c", "a", "b")))

    assert placed(out) == {"b": W2}
