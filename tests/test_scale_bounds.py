"""What a worker and the task stream keep per task stays bounded at a million tasks.

A client holding a million futures keeps a million results on the workers, so what a
worker holds per kept result decides its memory (845 MB per worker at 1M no-op tasks
before these bounds); the task stream, capped in entries (report batches), held 52 MB.
"""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import Iterator

import pytest

from rdist.protocol.wire import Compute, DepInfo
from rdist.store import RedisStore, connect
from rdist.store import streams as streams_module
from rdist.worker.events import ComputeTasks, Execute, ExecuteSuccess, FreeKeys
from rdist.worker.execution import Outcome
from rdist.worker.state import NO_DEPS, WorkerState, WTaskState

SPEC = (None, b"\x80\x05args", 0, None)
OUTCOME = Outcome(28, b"\x80\x05x", 0.0001, "int")


def _keys(n: int, prefix: str = "noop") -> list[str]:
    return [f"{prefix}-{i:032x}" for i in range(n)]


def _run_all(ws: WorkerState, keys: list[str], deps: dict[str, dict[str, DepInfo]]) -> None:
    """Assign ``keys`` in batches of 100 and run every task the machine lets run."""
    for start in range(0, len(keys), 100):
        batch = keys[start : start + 100]
        actions = [Compute(k, (0, start + i), deps.get(k, {})) for i, k in enumerate(batch)]
        todo = ws.handle_stimulus(
            ComputeTasks(f"b-{start}", 0.0, actions, dict.fromkeys(batch, SPEC))
        )
        while todo:
            ran = [i for i in todo if type(i) is Execute]
            todo = []
            for ex in ran:
                todo += ws.handle_stimulus(ExecuteSuccess("tf", 0.0, ex.key, 0.0001, OUTCOME))


def test_a_kept_result_holds_only_its_state_and_links_on_the_worker() -> None:
    # given a worker that ran 3,000 tasks whose results the scheduler still wants
    ws = WorkerState(1, log_length=1_000)
    keys = _keys(3_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _run_all(ws, keys, {})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # then each task keeps its record and nothing made only to run it
    assert ws.count(WTaskState.MEMORY) == len(keys)
    for key in keys:
        ts = ws.tasks[key]
        assert ts.spec is None and ts.deps is NO_DEPS and ts.priority == ()
        assert ts.dependencies is None and ts.waiting_for_data is None and ts.dependents is None
    # and the log is a ring: at most its length, however many tasks ran
    assert len(ws.log) == 1_000
    # a record (~190 B), its place in ``tasks`` (~100 B), the bounded log (~90 B a row,
    # 1,000 rows over 3,000 tasks); three empty sets alone were 648 B a task
    assert held / len(keys) < 400, held / len(keys)
    ws.validate_state()


def test_inputs_links_go_once_the_dependents_ran() -> None:
    # given tasks that each need the result of the one before
    ws = WorkerState(1)
    keys = _keys(300, "chain")
    deps = {k: {keys[i - 1]: DepInfo([], 28, True)} for i, k in enumerate(keys) if i}
    _run_all(ws, keys, deps)
    ws.validate_state()
    # then no link is left: every input was only needed to run its dependent
    assert all(ts.dependents is None and ts.dependencies is None for ts in ws.tasks.values())
    # and the results freed by the scheduler go, every one
    ws.handle_stimulus(FreeKeys("free", 1.0, keys))
    assert not ws.tasks
    ws.validate_state()


@pytest.fixture
def store() -> Iterator[RedisStore]:
    s = connect(f"fakeredis://scale-{uuid.uuid4().hex}", "scale")
    try:
        yield s
    finally:
        s.close()


def _runs_held(store: RedisStore) -> tuple[int, int]:
    """(runs the entries say they carry, the counter beside the stream)."""
    entries = store.redis.xrange(store.keys.taskstream)
    counted = sum(int(fields[b"n"]) for _, fields in entries)
    return counted, int(store.redis.get(store.keys.taskstream_runs) or 0)


def _cap(monkeypatch: pytest.MonkeyPatch, trim_every: int) -> None:
    monkeypatch.setattr(streams_module, "TASKSTREAM_RUNS", 1_000)
    monkeypatch.setattr(streams_module, "TASKSTREAM_SLACK", 100)
    monkeypatch.setattr(streams_module, "TASKSTREAM_TRIM_EVERY", trim_every)


def test_the_task_stream_is_capped_in_runs_not_entries(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cap(monkeypatch, trim_every=1)
    # given reports of 250 runs each: 40 of them, 10,000 runs
    for i in range(40):
        store.streams.task_runs(b"batch-%d" % i, runs=250)
        counted, counter = _runs_held(store)
        # then the stream never holds more than the cap and its slack, and says so
        assert counted == counter <= 1_100, (i, counted, counter)
    # and what it holds is the newest reports (4 x 250 = the cap)
    entries = store.redis.xrange(store.keys.taskstream)
    assert [fields[b"m"] for _, fields in entries] == [b"batch-%d" % i for i in range(36, 40)]
    # given single runs now: the cap holds in runs again (1,000 entries, not 4)
    for _ in range(1_500):
        store.streams.task_runs(b"one", runs=1)
    counted, counter = _runs_held(store)
    assert counted == counter <= 1_100
    assert store.redis.xlen(store.keys.taskstream) == counted


def test_a_writer_trims_every_so_many_runs_it_wrote(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cap(monkeypatch, trim_every=500)
    # given two writers (two stores' facades, as two workers) of 100-run reports
    other = connect(store.url, store.keys.cluster)
    try:
        most = 0
        for _ in range(30):
            for writer in (store, other):
                writer.streams.task_runs(b"batch", runs=100)
                counted, counter = _runs_held(store)
                assert counted == counter
                most = max(most, counted)
    finally:
        other.close()
    # then the stream overshoots the cap by at most its slack and a trim period a writer
    assert most <= 1_000 + 100 + 2 * 500, most
    # and it was trimmed: 6,000 runs were written
    assert counted <= 1_100 + 2 * 500


def test_the_task_stream_cap_recovers_from_a_lost_stream(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cap(monkeypatch, trim_every=1)
    for _ in range(4):
        store.streams.task_runs(b"batch", runs=250)
    # given the stream deleted without its counter (e.g. by hand)
    store.redis.delete(store.keys.taskstream)
    # when reports go on, the counter is corrected at the next trim, not left drifting
    for _ in range(4):
        store.streams.task_runs(b"batch", runs=250)
    counted, counter = _runs_held(store)
    assert counted == counter == 1_000  # (the first trim found 1,250 said, 250 there)
    for _ in range(20):
        store.streams.task_runs(b"batch", runs=250)
        counted, counter = _runs_held(store)
        assert counted == counter <= 1_100
