"""The diagnostics' pure parts: call trees, the profiler's sampling, task groups, the
progress bar's text, time bounds and the HTML page -- no Redis."""

from __future__ import annotations

import datetime
import io
import json
import sys
import threading
import time
from typing import Any

import pytest

from rdist.client import diagnostics as diag
from rdist.diagnostics import html
from rdist.diagnostics.progressbar import GroupCount, TextProgress, bar_line
from rdist.protocol import profile, serialize, spec, wire
from rdist.protocol.groups import key_split
from rdist.protocol.wire.diagnostics import MAX_DEPTH, PROFILE_TREE
from rdist.worker.profiler import Profiler, interval_from_env
from tests.client_helpers import wait_until

F = ("f", "/m.py", 1)
G = ("g", "/m.py", 5)
H = ("h", "/n.py", 9)


# -- call trees --------------------------------------------------------------------------------
def test_tree_builder_counts_every_frame_of_every_sample():
    tree = profile.TreeBuilder()
    tree.add([F, G])
    tree.add([F, G])
    tree.add([F, H])
    tree.add([])

    root = tree.tree()
    assert root[:4] == ["", "", 0, 4] and tree.samples == 4
    (f,) = root[4]
    assert f[:4] == ["f", "/m.py", 1, 3]
    assert sorted(c[:4] for c in f[4]) == [["g", "/m.py", 5, 2], ["h", "/n.py", 9, 1]]


def test_tree_builder_caps_nodes_but_keeps_the_totals():
    tree = profile.TreeBuilder(max_nodes=3)
    for i in range(10):
        tree.add([F, (f"fn{i}", "/x.py", i)])

    stored = tree.tree()
    assert stored[3] == 10  # every sample counted at the root
    assert stored[4][0][3] == 10  # and at f, where the capped detail folds in
    assert len(stored[4][0][4]) == 1


def test_tree_builder_cuts_deep_stacks_at_the_stored_depth():
    tree = profile.TreeBuilder()
    tree.add([(f"f{i}", "/d.py", i) for i in range(MAX_DEPTH + 20)])
    node, depth = tree.tree(), 0
    while node[4]:
        node, depth = node[4][0], depth + 1
    assert depth == MAX_DEPTH
    PROFILE_TREE.decode(tree.tree(), "g")  # what the profiler makes, the reader accepts


def test_merging_trees_adds_counts_of_matching_frames():
    one, two = profile.TreeBuilder(), profile.TreeBuilder()
    one.add([F, G])
    two.add([F, G])
    two.add([H])

    merged = profile.merge([one.tree(), two.tree()])

    assert merged[3] == 3
    by_name = {c[0]: c for c in merged[4]}
    assert by_name["f"][3] == 2 and by_name["f"][4][0][3] == 2
    assert by_name["h"][3] == 1


def test_merge_groups_keeps_groups_apart_and_selects_one():
    a, b = profile.TreeBuilder(), profile.TreeBuilder()
    a.add([F])
    b.add([G])
    batches = [{"inc": a.tree()}, {"inc": a.tree(), "add": b.tree()}]

    assert {k: v[3] for k, v in profile.merge_groups(batches).items()} == {"inc": 2, "add": 1}
    assert list(profile.merge_groups(batches, "add")) == ["add"]


def test_to_dask_gives_dasks_profile_dict_shape():
    tree = profile.TreeBuilder()
    tree.add([(test_to_dask_gives_dasks_profile_dict_shape.__name__, __file__, 1)])
    state = profile.to_dask(tree.tree())

    assert state["identifier"] == "root" and state["count"] == 1
    (child,) = state["children"].values()
    assert set(child) == {"identifier", "description", "count", "children"}
    assert (
        child["identifier"]
        == f"{test_to_dask_gives_dasks_profile_dict_shape.__name__};{__file__};1"
    )
    assert set(child["description"]) == {"filename", "name", "line_number", "line"}
    assert child["description"]["line"].startswith('"""The diagnostics')  # linecache


@pytest.mark.parametrize(
    "tree, problem",
    [
        (["", "", 0, 1], "a profile node"),
        (["", "", 0, -1, []], "counts"),
        ([1, "", 0, 1, []], "strings"),
        (["", "", 0, 1, "x"], "children"),
    ],
)
def test_a_malformed_tree_is_refused(tree: Any, problem: str):
    with pytest.raises(wire.MalformedMessage, match=problem):
        PROFILE_TREE.decode(tree, "g")


def test_a_tree_deeper_than_allowed_is_refused_without_recursion():
    node: list[Any] = ["", "", 0, 1, []]
    root = node
    for _ in range(MAX_DEPTH + 5):
        child: list[Any] = ["f", "/x.py", 1, 1, []]
        node[4].append(child)
        node = child
    with pytest.raises(wire.MalformedMessage, match="deeper"):
        PROFILE_TREE.decode(root, "g")


# -- the profiler's sampling -------------------------------------------------------------------
_STOP_SPINNING = threading.Event()


def _spin_in_task() -> None:
    while not _STOP_SPINNING.is_set():
        sum(range(100))


class _NoStore:
    profiles = None


def test_profiler_samples_only_the_task_frames_of_running_threads():
    profiler = Profiler("tcp://w:1", _NoStore(), threading.Event(), interval=0.001)  # type: ignore[arg-type]
    stop = _STOP_SPINNING
    stop.clear()
    blob = serialize.to_blob(((), {}))

    def run() -> None:
        profiler.begin("spin-0123456789abcdef")
        try:
            spec.run_spec(_spin_in_task, blob, spec.CALL, {})
        finally:
            profiler.end()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while profiler._samples < 20 and time.monotonic() < deadline:
            profiler.sample()
            time.sleep(0.002)
    finally:
        stop.set()
        thread.join()
    batch = profiler.take()

    assert batch is not None and batch.samples >= 20
    assert list(batch.groups) == ["spin"]
    tops = {c[0] for c in batch.groups["spin"][4]}
    assert tops <= {"_spin_in_task"}, tops  # cut at the task's function: no executor frames
    assert profiler.take() is None  # taken: nothing new since


def test_profiler_is_idle_without_running_tasks():
    profiler = Profiler("tcp://w:1", _NoStore(), threading.Event())  # type: ignore[arg-type]
    profiler.sample()
    assert profiler.take() is None


def test_profile_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("RDIST_PROFILE_INTERVAL", "off")
    assert interval_from_env() == 0.0
    monkeypatch.setenv("RDIST_PROFILE_INTERVAL", "0.02")
    assert interval_from_env() == 0.02
    monkeypatch.delenv("RDIST_PROFILE_INTERVAL")
    assert interval_from_env() == 0.01
    monkeypatch.setenv("RDIST_PROFILE_INTERVAL", "often")
    with pytest.raises(ValueError, match="RDIST_PROFILE_INTERVAL"):
        interval_from_env()


def test_a_disabled_profiler_records_nothing():
    profiler = Profiler("tcp://w:1", _NoStore(), threading.Event(), interval=0)  # type: ignore[arg-type]
    profiler.begin("x-1")
    assert profiler._running == {}
    profiler.run()  # returns at once


# -- groups, bars, bounds ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, group",
    [
        ("inc-3f2a9c0d11223344", "inc"),
        ("('sum-aggregate-abc123ff00aa', 0, 1)", "sum-aggregate"),
        ("x-1", "x"),
        ("x", "x"),
        ("lambda-9f8e7d6c5b4a39281726354453627181", "lambda"),
    ],
)
def test_key_split_names_the_task_group_as_dask_does(key, group):
    assert key_split(key) == group


def test_bar_line_shows_share_counts_errors_and_time():
    line = bar_line(GroupCount("inc", 4, 1, 1), 1.25, width=10)
    assert line.startswith("inc ")
    assert "[#####     ] |  50% Completed | 2/4 (1 erred) |   1.2s" in line


def test_text_progress_without_futures_prints_a_full_bar():
    out = io.StringIO()
    TextProgress([], multi=False, file=out).run()
    assert "100% Completed" in out.getvalue()


def test_time_bounds_accept_what_dask_accepts():
    now = 1_000_000.0
    assert diag.time_bound(None) is None
    assert diag.time_bound(5, now) == 5.0
    assert diag.time_bound("10s", now) == now - 10
    assert diag.time_bound("500ms", now) == now - 0.5
    assert diag.time_bound(datetime.timedelta(minutes=1), now) == now - 60
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    assert diag.time_bound(moment) == moment.timestamp()
    with pytest.raises(ValueError, match="duration"):
        diag.time_bound("soon")


# -- the page ----------------------------------------------------------------------------------
def test_page_is_self_contained_and_its_data_cannot_close_the_script():
    page = html.render("t", {"events": [{"time": 1.0, "kind": "x", "info": "</script><b>"}]})

    assert "</script><b>" not in page
    data = page.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["events"][0]["info"] == "</script><b>"
    offline = page.replace("http://www.w3.org/2000/svg", "")  # a namespace name, not fetched
    assert "http://" not in offline and "https://" not in offline and "<script src" not in page
    assert '<section id="events">' in page and '<section id="profile">' not in page


def test_page_data_has_no_nan():
    page = html.render("t", {"summary": {"x": float("nan")}})
    data = page.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data) == {"summary": {"x": None}}


class _FakeFuture:
    """What the progress bar uses of a future: its key, status and done callbacks."""

    def __init__(self, key: str) -> None:
        self.key, self.status = key, "pending"
        self._callbacks: list[Any] = []

    def add_done_callback(self, fn: Any) -> None:
        self._callbacks.append(fn)

    def finish(self, status: str = "finished") -> None:
        self.status = status
        for fn in self._callbacks:
            fn(self)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_text_progress_redraws_in_place_on_a_terminal_and_blanks_hidden_bars():
    futures = [_FakeFuture("inc-aaaaaaaaaa"), _FakeFuture("dec-bbbbbbbbbb")]
    screen = _Terminal()
    bar = TextProgress(futures, complete=False, file=screen)  # type: ignore[arg-type]
    bar.draw()
    futures[0].finish()
    bar.draw()
    futures[1].finish("error")
    bar.draw(final=True)

    frames = screen.getvalue().split("\x1b[2F")  # back over the two lines drawn before
    assert len(frames) == 3
    assert "inc " in frames[0] and "dec " in frames[0]
    assert "inc " not in frames[1] and "dec " in frames[1]  # finished: hidden
    assert frames[2].count("\x1b[2K") == 2 and "dec" not in frames[2]


def test_task_stream_rows_take_each_runs_own_end_time():
    from rdist.protocol import taskstream

    done = [
        wire.DoneRow("a", 1, False, None, 0.5, "int"),
        wire.DoneRow("b", 1, False, None, 0.25, "int"),
    ]
    payload = taskstream.encode_batch("tcp://w:1", "", 10.0, done, [], stops={"a": 9.0})
    runs = {r.key: (r.start, r.stop) for r in taskstream.decode_batch(payload)}
    assert runs == {"a": (8.5, 9.0), "b": (9.75, 10.0)}  # b: no end known, the report's


_HOLD = threading.Event()


def _nested(depth: int) -> None:
    if depth:
        _nested(depth - 1)
    else:
        _HOLD.wait(10)


def _innermost(thread: threading.Thread) -> list[str]:
    """The names of the thread's three innermost Python frames, outermost first."""
    frame, names = sys._current_frames().get(thread.ident or 0), []
    while frame is not None and len(names) < 3:
        names.insert(0, frame.f_code.co_name)
        frame = frame.f_back
    return names


def test_repeated_samples_of_an_unchanged_stack_count_every_frame_each_time():
    profiler = Profiler("tcp://w:1", _NoStore(), threading.Event(), interval=0)  # type: ignore[arg-type]
    profiler.enabled = True  # sampled by hand below, no thread
    _HOLD.clear()
    blob = serialize.to_blob(((3,), {}))

    def run() -> None:
        profiler.begin("nest-1")
        try:
            spec.run_spec(_nested, blob, spec.CALL, {})
        finally:
            profiler.end()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        while not profiler._running:
            time.sleep(0.001)
        # until the thread blocks inside _HOLD.wait (a fixed 0.05 s raced a starved thread:
        # samples taken on its way there differ from one another)
        wait_until(lambda: _innermost(thread) == ["_nested", "wait", "wait"], what="the wait")
        for _ in range(5):
            profiler.sample()
        first = profiler.take()
        for _ in range(3):
            profiler.sample()  # after a take: counted in the new trees
        second = profiler.take()
    finally:
        _HOLD.set()
        thread.join()

    assert first is not None and second is not None
    for batch, n in ((first, 5), (second, 3)):
        node, names = batch.groups["nest"], []
        assert node[3] == n
        while node[4]:
            (node,) = node[4]
            assert node[3] == n, (names, node)
            names.append(node[0])
        assert names[:4] == ["_nested"] * 4 and names[-1] == "wait"


def test_the_sampler_lingers_after_a_task_so_short_tasks_do_not_wake_it_each(monkeypatch):
    from rdist.worker import profiler as profiler_module

    monkeypatch.setattr(profiler_module, "LINGER", 1.5)
    stop = threading.Event()
    profiler = Profiler("tcp://w:1", _NoStore(), stop, interval=0.005)  # type: ignore[arg-type]
    thread = threading.Thread(target=profiler.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not profiler._sleeping and time.monotonic() < deadline:
            time.sleep(0.005)
        assert profiler._sleeping  # idle from the start: it waits for work
        # given one short task
        profiler.begin("short-1")
        profiler.end()
        deadline = time.monotonic() + 5
        while profiler._sleeping and time.monotonic() < deadline:  # (woken by the begin)
            time.sleep(0.005)
        time.sleep(0.2)  # (without the linger it sleeps again after one period)
        # then the sampler keeps looking by the clock: the next task's begin wakes nobody
        assert not profiler._sleeping
        # and once the linger is over it sleeps until work comes again
        deadline = time.monotonic() + 5
        while not profiler._sleeping and time.monotonic() < deadline:
            time.sleep(0.01)
        assert profiler._sleeping
    finally:
        stop.set()
        profiler.stop()
        thread.join(5)


def test_looks_that_find_no_task_running_stretch_the_period_until_one_does(monkeypatch):
    from rdist.worker import profiler as profiler_module

    monkeypatch.setattr(profiler_module, "LINGER", 5.0)
    stop = threading.Event()
    sent: list[object] = []
    store = type(
        "Store", (), {"profiles": type("Profiles", (), {"add": staticmethod(sent.append)})}
    )
    profiler = Profiler("tcp://w:1", store(), stop, interval=0.005)  # type: ignore[arg-type]
    looks: list[float] = []
    monkeypatch.setattr(profiler, "_flush_if_idle_long_enough", lambda: looks.append(1))
    samples: list[float] = []
    real_sample = profiler.sample
    monkeypatch.setattr(profiler, "sample", lambda: (samples.append(1), real_sample()))
    thread = threading.Thread(target=profiler.run, daemon=True)
    thread.start()
    try:
        # given tiny tasks all the time (a client waiting on each): no look finds one running
        finish = time.monotonic() + 0.6
        while time.monotonic() < finish:
            profiler.begin("tiny-1")
            profiler.end()
            time.sleep(0.001)
        # then it looked far less often than every 5 ms (120 looks): about every 25 ms
        assert 3 <= len(looks) <= 60, len(looks)
        # and a task that keeps running is found and sampled every period again
        profiler.begin("long-1")
        time.sleep(0.3)
        profiler.end()
        assert len(samples) >= 3
    finally:
        stop.set()
        profiler.stop()
        thread.join(5)
