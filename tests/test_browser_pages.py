"""Every dashboard page in headless Chromium while a real cluster runs dask.array and
dask.dataframe computations: what each page must show, the layout at 800 and 2560 px, full
names on hover, one task-stream lane per thread -- and a screenshot of every page saved
under ``test-artifacts/screenshots/`` (git-ignored; CI keeps it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdist import Client, LocalCluster
from rdist.embedded import EmbeddedRedis
from rdist.store import connect
from tests.chromium import Chromium, find_chromium

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("subprocess_pythonpath")]

SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (apt-get install -y chromium); the browser tests need it",
        allow_module_level=True,
    )
da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
pd = pytest.importorskip("pandas")
np = pytest.importorskip("numpy")

THREADS = 2


# Run by the workers: module-level, so they pickle by reference.
def slow_block(block: Any) -> Any:
    time.sleep(0.15)
    return block + 1


def slow_partition(frame: Any) -> Any:
    time.sleep(0.15)
    return frame.assign(v=frame.v * 2)


def nap(seconds: float) -> str:
    time.sleep(seconds)
    return "rested"


@pytest.fixture(scope="module")
def cluster(redis_server: EmbeddedRedis, subprocess_pythonpath: None) -> Iterator[LocalCluster]:
    old = os.environ.get("RDIST_DASHBOARD__INTERVAL")
    os.environ["RDIST_DASHBOARD__INTERVAL"] = "0.5"  # the dashboard subprocess reads it
    try:
        with LocalCluster(
            n_workers=2,
            threads_per_worker=THREADS,
            processes=True,
            redis_url=redis_server.url,
            name=f"pages-{uuid.uuid4().hex[:8]}",
            dashboard_address=":0",
            nanny=False,
        ) as lc:
            yield lc
    finally:
        if old is None:
            os.environ.pop("RDIST_DASHBOARD__INTERVAL", None)
        else:
            os.environ["RDIST_DASHBOARD__INTERVAL"] = old


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    with Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def computing(client: Client) -> Iterator[list[Any]]:
    """A dask.array and a dask.dataframe computation, resubmitted while the tests look."""
    array = da.ones((1200, 1200), chunks=(200, 200)).map_blocks(slow_block)
    frame = dd.from_pandas(
        pd.DataFrame({"k": np.arange(4000) % 7, "v": np.arange(4000.0)}), npartitions=16
    )
    frame = frame.map_partitions(slow_partition)
    held: list[Any] = []

    def submit() -> None:
        held[:] = [client.compute((array + array.T).sum()), client.compute(frame.v.sum())]

    submit()
    yield held
    assert held[0].result(timeout=120) == 2 * 2 * 1200 * 1200
    assert held[1].result(timeout=120) == 2 * sum(range(4000))


@pytest.fixture(scope="module")
def page() -> Iterator[Chromium]:
    assert CHROMIUM is not None
    with Chromium(CHROMIUM, width=1400, height=1000) as browser:
        yield browser


def text_of(element_id: str) -> str:
    return f"(document.getElementById({json.dumps(element_id)}) || {{}}).textContent"


def count(selector: str) -> str:
    return f"document.querySelectorAll({json.dumps(selector)}).length"


def open_live(page: Chromium, url: str) -> None:
    page.goto(url)
    page.wait_for(f"{text_of('conn')} === 'live'")


def width(page: Chromium, pixels: int) -> None:
    page.call(
        "Emulation.setDeviceMetricsOverride",
        width=pixels,
        height=1000,
        deviceScaleFactor=1,
        mobile=False,
    )


#: Elements cut with an ellipsis that lack their full text on hover (none may).
CUT_WITHOUT_TITLE = (
    "Array.from(document.querySelectorAll('.name, .ellipsis, .mono'))"
    ".filter(e => e.scrollWidth > e.clientWidth + 1 && !e.title && !e.closest('[title]'))"
    ".map(e => e.textContent)"
)
#: Things wider than the window (the TASKS card overflowed at 800 px).
OVERFLOWING = (
    "[document.documentElement.scrollWidth > window.innerWidth ? 'page' : null,"
    " ...Array.from(document.querySelectorAll('.card'))"
    ".filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent)].filter(x => x)"
)


def chart_points(canvas_id: str) -> str:
    return (
        f"((document.getElementById({json.dumps(canvas_id)}) || {{}})._chart || "
        "{times: []}).times.length"
    )


def test_status_page_draws_everything_during_array_and_dataframe_work(
    page: Chromium, cluster: LocalCluster, computing: list[Any]
) -> None:
    open_live(page, cluster.dashboard_link)
    page.wait_for("document.getElementById('ts-empty').hidden === true", timeout=30)
    page.wait_for(f"{count('#progress .row')} >= 2")
    page.wait_for(f"{count('#worker-bars .wrow')} === 2")
    page.wait_for(f"{count('#worker-bars .membar .seg.managed')} === 2")
    # the charts come from the server's history, drawn as lines over many points
    page.wait_for(f"{chart_points('h-rate')} >= 3 && {chart_points('h-network')} >= 3")
    # one lane per worker thread: 2 workers x 2 threads, whatever ran meanwhile
    lanes = 2 * THREADS
    assert page.evaluate("document.getElementById('taskstream').style.height") == (
        f"{18 + lanes * 14 + 2 * 6 + 4}px"
    )
    assert page.evaluate(CUT_WITHOUT_TITLE) == []
    # photographed once the work is well under way (results held, the stream busy)
    page.wait_for(f"/[1-9]\\d+ in memory/.test({text_of('c-tasks-sub')})", timeout=60)
    page.screenshot(SCREENSHOTS / "status.png")


@pytest.mark.parametrize("pixels", [800, 2560])
def test_status_page_fits_narrow_and_wide_windows(
    page: Chromium, cluster: LocalCluster, computing: list[Any], pixels: int
) -> None:
    width(page, pixels)
    try:
        open_live(page, cluster.dashboard_link)
        page.wait_for(f"{count('#worker-bars .wrow')} === 2")
        page.wait_for(f"{chart_points('h-rate')} >= 2")
        assert page.evaluate(OVERFLOWING) == []
        assert page.evaluate(CUT_WITHOUT_TITLE) == []
        page.screenshot(SCREENSHOTS / f"status-{pixels}px.png")
    finally:
        width(page, 1400)


def test_history_is_there_on_page_load(page: Chromium, cluster: LocalCluster) -> None:
    """A page opened now shows the minutes before it, not an empty chart."""
    open_live(page, cluster.dashboard_link)
    first = page.evaluate(chart_points("h-memory"))
    assert first >= 3  # the dashboard sampled since the cluster started


def test_system_page_plots_every_worker(
    page: Chromium, cluster: LocalCluster, computing: list[Any]
) -> None:
    open_live(page, cluster.dashboard_link + "system")
    page.wait_for(f"{chart_points('sys-cpu')} >= 3")
    for canvas in ("sys-cpu", "sys-memory", "sys-network", "sys-disk"):
        series = page.evaluate(f"document.getElementById('{canvas}')._chart.series.length")
        assert series == (2 if canvas in ("sys-cpu", "sys-memory") else 4), canvas
    page.screenshot(SCREENSHOTS / "system.png")


def test_worker_page_shows_call_stacks_of_running_tasks(
    page: Chromium, client: Client, cluster: LocalCluster
) -> None:
    address = sorted(client.scheduler_info()["workers"])[0]
    sleeper = client.submit(nap, 6, workers=[address], pure=False)
    open_live(page, cluster.dashboard_link + "worker?address=" + address)
    page.wait_for(f"{text_of('w-address')} === {json.dumps(address)}")
    page.wait_for(f"{count('#w-facts dt')} >= 10")
    page.wait_for(f"{count('#w-tasks tbody tr')} >= 1", timeout=15)  # the nap, assigned here
    # assigned is the scheduler's word: the worker may not have begun the nap when first
    # asked (an answer without it), so ask again each time the button is free until it shows
    page.wait_for(
        """(() => {
            const shown = Array.from(document.querySelectorAll('#w-stacks pre'))
                .some(p => p.textContent.includes('in nap'));
            const button = document.getElementById('w-stacks-button');
            if (!shown && !button.disabled) button.click();
            return shown;
        })()""",
        timeout=20,
    )
    page.wait_for(f"{chart_points('w-cpu')} >= 2")
    page.screenshot(SCREENSHOTS / "worker.png")
    assert sleeper.result(timeout=30) == "rested"


def test_graph_page_colours_the_graph_by_state(
    page: Chromium, cluster: LocalCluster, computing: list[Any]
) -> None:
    open_live(page, cluster.dashboard_link + "graph")
    page.wait_for(f"/\\d+ tasks, \\d+ dependencies/.test({text_of('g-summary')})")
    assert page.evaluate("document.getElementById('g-too-many').hidden") is True
    page.screenshot(SCREENSHOTS / "graph.png")


def test_clients_page_shows_each_clients_groups(
    page: Chromium, client: Client, cluster: LocalCluster, computing: list[Any]
) -> None:
    open_live(page, cluster.dashboard_link + "clients")
    page.wait_for(f"document.querySelector('[data-client={json.dumps(client.id)}]') !== null")
    page.wait_for(
        f"document.querySelectorAll('[data-client={json.dumps(client.id)}] .row').length >= 1"
    )
    page.screenshot(SCREENSHOTS / "clients.png")


def test_tasks_page_names_the_worker_holding_a_result(
    page: Chromium, client: Client, cluster: LocalCluster
) -> None:
    done = client.submit(nap, 0.01, pure=False)
    assert done.result(timeout=30) == "rested"
    open_live(page, cluster.dashboard_link + "tasks?key=" + done.key)
    page.wait_for("document.getElementById('d-facts').textContent.includes('holds the result')")
    facts = page.evaluate(text_of("d-facts"))
    assert "worker–" not in facts and "tcp://" in facts
    page.screenshot(SCREENSHOTS / "tasks.png")


def test_dead_letter_page_lists_and_requeues(page: Chromium, cluster: LocalCluster) -> None:
    store = connect(cluster.redis_url, cluster.cluster_name)
    try:
        store.streams.to_scheduler(b"\x92not a message")  # msgpack, but no op: set aside
        open_live(page, cluster.dashboard_link + "deadletters")
        page.wait_for(f"{count('#letters tbody tr')} >= 1", timeout=20)
        before = page.evaluate(count("#letters tbody tr"))
        page.screenshot(SCREENSHOTS / "deadletters.png")
        page.evaluate("document.querySelector('#letters tbody tr button.requeue').click()")
        page.wait_for(f"/Requeued/.test({text_of('dl-message')})")
        assert page.evaluate(count("#letters tbody tr")) == before - 1
    finally:
        store.close()


def test_events_page_shows_joins_and_the_scheduler(page: Chromium, cluster: LocalCluster) -> None:
    open_live(page, cluster.dashboard_link + "events")
    page.wait_for(f"{count('#events tbody tr.ev-worker-joined')} >= 2")
    page.wait_for(f"{count('#events tbody tr.ev-scheduler-started')} >= 1")
    page.screenshot(SCREENSHOTS / "events.png")


def test_workers_page_links_each_worker(page: Chromium, cluster: LocalCluster) -> None:
    open_live(page, cluster.dashboard_link + "workers")
    page.wait_for(f"{count('#workers tbody tr td a')} === 2")
    assert page.evaluate(CUT_WITHOUT_TITLE) == []
    page.screenshot(SCREENSHOTS / "workers.png")


def test_profile_page_draws_the_flame_graph_or_says_why_not(
    page: Chromium, client: Client, cluster: LocalCluster
) -> None:
    assert client.submit(nap, 1.5, pure=False).result(timeout=30) == "rested"
    open_live(page, cluster.dashboard_link + "profile")
    drawn = page.wait_for(
        "!document.getElementById('p-unavailable').hidden ? 'unavailable' : "
        "(/[1-9][\\d,]* samples/.test(document.getElementById('p-summary').textContent) "
        "&& document.getElementById('flame').style.height !== '60px' && 'drawn')",
        timeout=20,
    )
    profiler = importlib.util.find_spec("rdist.protocol.profile") is not None
    assert drawn == ("drawn" if profiler else "unavailable")
    page.screenshot(SCREENSHOTS / "profile.png")
