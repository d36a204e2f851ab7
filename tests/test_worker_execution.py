"""The worker's execution budget (ReadyQueue) and its bookkeeping for steals and
co-assigned tasks, without threads or Redis."""

from __future__ import annotations

import threading

from rdist.worker.execution import ReadyQueue
from rdist.worker.state import Decisions, WorkerState, WTask, WTaskState


def wtask(key: str, priority: int = 0, resources: dict[str, float] | None = None) -> WTask:
    return WTask(key, (priority,), {}, state=WTaskState.READY, resources=resources)


def test_ready_queue_hands_out_at_most_nthreads_tasks_highest_priority_first():
    q = ReadyQueue(nthreads=2)
    q.put([wtask("low", 5), wtask("high", 1), wtask("mid", 3)])

    first, second = q.try_get(), q.try_get()

    assert (first.key, second.key) == ("high", "mid")
    assert q.try_get() is None  # both threads busy
    q.done(first)
    assert q.try_get().key == "low"


def test_ready_queue_bounds_tasks_by_the_resources_the_worker_declared():
    q = ReadyQueue(nthreads=4, resources={"GPU": 1})
    q.put([wtask("gpu-a", 1, {"GPU": 1}), wtask("gpu-b", 2, {"GPU": 1}), wtask("cpu", 3)])

    got = [q.try_get(), q.try_get()]

    assert [t.key for t in got] == ["gpu-a", "cpu"]  # gpu-b waits for the GPU
    assert q.try_get() is None
    q.done(got[0])
    assert q.try_get().key == "gpu-b"


def test_seceded_task_gives_its_slot_back_and_rejoin_takes_one_again():
    q = ReadyQueue(nthreads=1)
    q.put([wtask("parent"), wtask("child", 1)])
    parent = q.try_get()
    assert q.try_get() is None

    q.release_slot()  # secede()
    child = q.try_get()
    assert child.key == "child"
    q.done(child)
    q.acquire_slot()  # rejoin(): free again now
    q.done(parent)

    assert q.running == 0


def test_only_the_fast_task_at_the_head_is_taken_inline():
    q = ReadyQueue(nthreads=1)
    q.put([wtask("slow", 1), wtask("fast", 2)])

    assert q.try_get(lambda t: t.key.startswith("fast")) is None
    assert q.try_get(lambda t: t.key.startswith("slow")).key == "slow"


def _getter(q: ReadyQueue) -> tuple[threading.Thread, list[WTask | None]]:
    got: list[WTask | None] = []
    thread = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
    thread.start()
    return thread, got


def test_a_task_queued_without_waking_stays_for_the_thread_that_queued_it():
    q = ReadyQueue(nthreads=1)
    thread, got = _getter(q)  # an idle executor thread

    q.put([wtask("quick")], wake=False)
    thread.join(0.1)
    assert thread.is_alive() and not got  # not woken: the stream thread runs it itself
    assert q.try_get().key == "quick"
    q.close()


def test_wake_hands_what_was_left_to_the_executor_threads():
    q = ReadyQueue(nthreads=1)
    thread, got = _getter(q)

    q.put([wtask("left")], wake=False)
    q.wake()
    thread.join(5)

    assert [t.key for t in got] == ["left"]


def test_a_finished_task_wakes_a_thread_only_when_there_is_work_for_it():
    class CountingCondition(threading.Condition):
        wakes = 0

        def notify_all(self) -> None:
            CountingCondition.wakes += 1
            super().notify_all()

    q = ReadyQueue(nthreads=1)
    q._cv = CountingCondition(threading.Lock())
    q.put([wtask("one")])
    q.done(q.try_get())
    assert CountingCondition.wakes == 0  # nothing queued, nobody rejoining: no wake-up

    q.put([wtask("two"), wtask("three")])
    q.done(q.try_get())
    assert CountingCondition.wakes == 1


def test_worker_gives_up_a_task_it_has_not_started_but_not_one_it_runs():
    state, out = WorkerState(), Decisions()
    state.compute("queued", [0], {}, out)
    state.compute("running", [0], {}, out)
    assert state.start(state.tasks["running"])

    assert state.steal("queued") is True
    assert state.steal("running") is False
    assert state.steal("unknown") is False
    assert "queued" not in state.tasks
    state.validate_state()


def test_co_assigned_task_waits_for_an_input_computed_here_instead_of_fetching_it():
    state, out = WorkerState(), Decisions()
    state.compute("a", [0], {}, out)
    state.compute("b", [1], {"a": [[], 0, False]}, out)

    assert out.fetch == {}  # nothing to fetch: "a" is computed here
    assert state.tasks["b"].state is WTaskState.FETCHING
    assert state.start(state.tasks["a"]) and state.finished("a", stored=True)
    woken = Decisions()
    state.fetched(["a"], woken)

    assert [t.key for t in woken.ready] == ["b"]
    state.validate_state()
