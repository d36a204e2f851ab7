"""The diagnostics on a fakeredis cluster: the task stream with transfers, the profiler,
``client.profile``, ``progress``, spans and the performance report."""

from __future__ import annotations

import io
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import rdist
from rdist.diagnostics import progressbar as progress_module
from tests.client_helpers import wait_gate
from tests.conftest import fake_cluster


def busy(x: int, seconds: float = 0.05) -> int:
    end = time.time() + seconds
    while time.time() < end:
        sum(range(200))
    return x


def array(i: int) -> np.ndarray:
    return np.full(50_000, float(i))


def total(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.sum() + b.sum())


def fail(x: int) -> None:
    raise ValueError(f"no {x}")


def two_worker_transfer(c: rdist.Client, cluster: Any) -> rdist.Future:
    """An input made on each worker, summed on one: one input moves peer to peer."""
    first, second = (w.address for w in cluster.workers)
    a = c.submit(array, 1, workers=[first])
    b = c.submit(array, 2, workers=[second])
    return c.submit(total, a, b, workers=[first])


# -- the task stream ---------------------------------------------------------------------------
def test_task_stream_records_have_dasks_shape_with_size_type_and_errors():
    with fake_cluster(1) as (c, _):
        with rdist.get_task_stream() as ts:
            assert c.submit(busy, 1, 0.0).result(timeout=10) == 1
            bad = c.submit(fail, 2)
            rdist.wait([bad], timeout=10)

    by_status = {r["status"]: r for r in ts.data}
    assert set(by_status) == {"OK", "error"}
    ok = by_status["OK"]
    assert set(ok) >= {"key", "worker", "thread", "startstops", "status", "nbytes", "type"}
    (run,) = ok["startstops"]
    assert run["action"] == "compute" and run["start"] <= run["stop"]
    assert ok["type"] == "int" and ok["nbytes"] > 0
    assert by_status["error"]["exception"] == "ValueError: no 2"
    assert "raise ValueError" in by_status["error"]["traceback"]


def test_get_task_stream_collects_only_what_ran_inside_the_block():
    with fake_cluster(1) as (c, _):
        before = c.submit(busy, 10, 0.0)
        before.result(timeout=10)
        with rdist.get_task_stream(client=c) as ts:
            inside = c.submit(busy, 11, 0.0)
            inside.result(timeout=10)

    assert [r["key"] for r in ts.data] == [inside.key]


def test_transfers_between_workers_are_in_the_task_stream_with_source_and_bytes():
    with fake_cluster(2) as (c, cluster):
        start = time.time()
        assert two_worker_transfer(c, cluster).result(timeout=10) == 150_000.0
        records = c.get_task_stream(start=start)

    moves = [r for r in records if r["startstops"][0]["action"] == "transfer"]
    assert len(moves) == 1
    (move,) = moves
    first, second = (w.address for w in cluster.workers)
    assert move["worker"] == first and move["startstops"][0]["source"] == second
    assert move["key"].startswith("array-") and move["nbytes"] >= 400_000


def test_client_get_task_stream_takes_count_and_bounds():
    with fake_cluster(1) as (c, _):
        start = time.time()
        c.gather(c.map(busy, range(5), seconds=0.0))
        assert len(c.get_task_stream(start=start)) == 5
        assert len(c.get_task_stream(start=start, count=2)) == 2
        assert c.get_task_stream(start=start, stop=start - 100) == []
        assert len(c.get_task_stream(start="1h")) >= 5


def test_task_stream_plot_writes_a_page(tmp_path: Path):
    target = tmp_path / "stream.html"
    with fake_cluster(1) as (c, _):
        with rdist.get_task_stream(plot="save", filename=str(target)) as ts:
            c.submit(busy, 3, 0.0).result(timeout=10)
    assert ts.figure == str(target)
    assert 'id="task_stream"' in target.read_text()


# -- the profiler ------------------------------------------------------------------------------
def _names(node: dict[str, Any]) -> set[str]:
    found, stack = set(), [node]
    while stack:
        n = stack.pop()
        for child in n["children"].values():
            found.add(child["description"]["name"])
            stack.append(child)
    return found


def test_client_profile_has_the_samples_of_a_busy_task_group(tmp_path: Path):
    with fake_cluster(1) as (c, _):
        start = time.time()
        c.gather(c.map(busy, range(4), seconds=0.15))
        deadline = time.monotonic() + 5
        state = c.profile(start=start)
        while state["count"] < 10 and time.monotonic() < deadline:
            time.sleep(0.1)  # the worker sends its samples once idle
            state = c.profile(start=start)

        assert state["count"] >= 10
        assert "busy" in _names(state)
        assert c.profile(key="busy", start=start)["count"] == state["count"]
        assert c.profile(key="other", start=start)["count"] == 0
        page = tmp_path / "flame.html"
        c.profile(start=start, filename=str(page))
        assert '<section id="profile">' in page.read_text()


def test_profiler_off_stores_nothing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RDIST_PROFILE_INTERVAL", "0")
    with fake_cluster(1) as (c, cluster):
        assert not cluster.workers[0].profiler.enabled
        c.gather(c.map(busy, range(2), seconds=0.1))
        assert c.store.profiles.between() == []


# -- progress ----------------------------------------------------------------------------------
def test_progress_draws_a_bar_per_group_and_returns_when_all_are_done():
    out = io.StringIO()
    with fake_cluster(1) as (c, _):
        fs = c.map(busy, range(3), seconds=0.02)
        bad = c.submit(fail, 1)
        assert rdist.progress(fs, bad, file=out, notebook=False) is None
        assert all(f.done() for f in [*fs, bad])

    lines = out.getvalue().splitlines()
    assert any(line.startswith("busy ") and "3/3" in line for line in lines)
    assert any(line.startswith("fail ") and "(1 erred)" in line for line in lines)


def test_progress_single_bar_and_hiding_complete_groups():
    with fake_cluster(1) as (c, _):
        fs = c.map(busy, range(2), seconds=0.0)
        single = io.StringIO()
        rdist.progress(fs, multi=False, file=single, notebook=False)
        hidden = io.StringIO()
        rdist.progress(fs, complete=False, file=hidden, notebook=False)

    assert single.getvalue().strip().startswith("[####") and "2/2" in single.getvalue()
    assert "busy" not in hidden.getvalue()


def test_progress_of_a_persisted_collection():
    dask_array = pytest.importorskip("dask.array")
    out = io.StringIO()
    with fake_cluster(1) as (c, _):
        x = c.persist(dask_array.ones((20,), chunks=5) + 1)
        rdist.progress(x, file=out, notebook=False)
    assert "4/4" in out.getvalue()


def test_progress_refuses_things_without_futures():
    with pytest.raises(ValueError, match="persist"):
        rdist.progress([1, 2])


class _Widget:
    def __init__(self, *children: Any, **kwargs: Any) -> None:
        self.children = children[0] if children else []
        self.value = kwargs.get("value")
        self.max = kwargs.get("max")
        self.bar_style = ""
        self.layout = types.SimpleNamespace(visibility="visible")


def gated(x: int, gate: str) -> int:
    wait_gate(gate)
    return x


def test_progress_in_a_notebook_shows_widgets_and_returns_at_once(monkeypatch, gates):
    fake = types.ModuleType("ipywidgets")
    for name in ("IntProgress", "HTML", "HBox", "VBox"):
        setattr(fake, name, type(name, (_Widget,), {}))
    monkeypatch.setitem(sys.modules, "ipywidgets", fake)
    shown: list[Any] = []
    monkeypatch.setattr(progress_module, "display", shown.append)
    with fake_cluster(1) as (c, _):
        gate = gates.new()
        futures = [c.submit(gated, i, gate) for i in range(2)]
        try:
            bar = rdist.progress(futures, notebook=True)
            # did not wait for the tasks: they cannot end before the gate opens (a clock
            # bound against tasks of 0.3 s failed on a loaded machine)
            assert not any(f.done() for f in futures)
            assert shown == [bar.widget]
        finally:
            gates.open(gate)
        rdist.wait(futures, timeout=10)
        bar.thread.join(timeout=5)

    (group,) = bar.bars.values()
    assert group.value == 2 and group.max == 2 and group.bar_style == "success"


def test_in_notebook_is_false_outside_a_kernel():
    assert progress_module.in_notebook() is False


# -- spans -------------------------------------------------------------------------------------
def test_spans_tag_tasks_and_the_workers_total_them_in_redis():
    with fake_cluster(1) as (c, _):
        with rdist.get_task_stream() as ts:
            with rdist.span("load") as outer:
                c.gather(c.map(busy, range(3), seconds=0.01))
                with rdist.span("parse") as inner:
                    c.submit(busy, 9, 0.01).result(timeout=10)
                    bad = c.submit(fail, 3)
                    rdist.wait([bad], timeout=10)
            c.submit(busy, 99, 0.0).result(timeout=10)  # outside any span
        totals = c.store.spans.get_many([outer, inner])

    assert totals[outer].names == ["load"] and totals[outer].count == 3
    assert totals[inner].names == ["load", "parse"]
    assert (totals[inner].count, totals[inner].erred) == (2, 1)
    assert totals[outer].duration >= 0.03 and totals[outer].nbytes > 0
    assert len(ts.data) == 6


def test_span_of_a_dask_collection_computation():
    dask = pytest.importorskip("dask")
    with fake_cluster(1) as (c, _):
        with rdist.span("sum") as ident:
            total_ = dask.delayed(sum)([dask.delayed(busy)(i, 0.0) for i in range(3)])
            assert total_.compute() == 3
        (totals,) = c.store.spans.get_many([ident]).values()
    assert totals.names == ["sum"] and totals.count == 4


def test_span_needs_a_name():
    with pytest.raises(ValueError, match="names"):
        with rdist.span():
            pass


# -- OpenTelemetry (a stand-in module: the real one is optional) -------------------------------
class _FakeSpan:
    def __init__(self, name: str, attributes: dict[str, Any]) -> None:
        self.name, self.attributes = name, dict(attributes)

    def __enter__(self) -> _FakeSpan:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value


def test_task_runs_become_opentelemetry_spans_when_it_is_installed(monkeypatch):
    made: list[_FakeSpan] = []

    class Tracer:
        def start_as_current_span(self, name: str, attributes: dict[str, Any]) -> _FakeSpan:
            made.append(_FakeSpan(name, attributes))
            return made[-1]

    trace = types.ModuleType("opentelemetry.trace")
    trace.get_tracer = lambda name: Tracer()  # type: ignore[attr-defined]
    package = types.ModuleType("opentelemetry")
    package.trace = trace  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "opentelemetry", package)
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", trace)
    with fake_cluster(1) as (c, _):
        with rdist.span("outer"):
            ok = c.submit(busy, 1, 0.0)
            bad = c.submit(fail, 1)
            rdist.wait([ok, bad], timeout=10)

    by_key = {s.attributes["rdist.key"]: s for s in made}
    assert by_key[ok.key].name == "rdist task busy"
    assert by_key[ok.key].attributes["rdist.status"] == "memory"
    assert by_key[ok.key].attributes["rdist.span"] == "outer"
    assert by_key[bad.key].attributes["rdist.status"] == "erred"


# -- the performance report --------------------------------------------------------------------
def test_performance_report_writes_one_self_contained_file(tmp_path: Path):
    target = tmp_path / "report.html"
    with fake_cluster(2) as (c, cluster):
        with rdist.performance_report(filename=str(target)):
            with rdist.span("work"):
                c.gather(c.map(busy, range(4), seconds=0.05))
            two_worker_transfer(c, cluster).result(timeout=10)

    page = target.read_text()
    for section in ("task_stream", "groups", "spans", "transfers", "memory", "cpu", "profile"):
        assert f'<section id="{section}">' in page, section
    assert "<script src" not in page and "<link" not in page


def test_runs_of_a_one_thread_worker_never_overlap_in_the_task_stream():
    """Runs reported together keep their own end times (not the report's), so a worker's
    lanes are as many as its threads."""
    with fake_cluster(1) as (c, _):
        start = time.time()
        c.gather(c.map(busy, range(30), seconds=0.002))
        runs = sorted(
            (r["startstops"][0] for r in c.get_task_stream(start=start)), key=lambda s: s["start"]
        )
    assert len(runs) == 30
    for earlier, later in zip(runs, runs[1:]):
        assert later["start"] >= earlier["stop"] - 1e-4, (earlier, later)
