"""The dashboard in headless Chromium, against a real cluster (processes and real Redis).

Each page is opened as a user would, checked for live updates while a computation runs,
and photographed into ``test-artifacts/``. Skips when no Chromium is installed.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdist import Client, LocalCluster
from rdist.embedded import EmbeddedRedis
from tests.chromium import Chromium, find_chromium

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("subprocess_pythonpath")]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (apt-get install -y chromium); the browser tests need it",
        allow_module_level=True,
    )


# Run by the workers: module-level, so they pickle by reference.
def slow_square(x: int) -> int:
    time.sleep(0.1)
    return x * x


def failing_task(x: int) -> None:
    raise ValueError(f"planned failure {x}")


@pytest.fixture(scope="module")
def cluster(redis_server: EmbeddedRedis, subprocess_pythonpath: None) -> Iterator[LocalCluster]:
    old = os.environ.get("RDIST_DASHBOARD__INTERVAL")
    os.environ["RDIST_DASHBOARD__INTERVAL"] = "0.5"  # the dashboard subprocess reads it
    try:
        with LocalCluster(
            n_workers=2,
            threads_per_worker=2,
            processes=True,
            redis_url=redis_server.url,
            name=f"browser-{uuid.uuid4().hex[:8]}",
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
def page() -> Iterator[Chromium]:
    assert CHROMIUM is not None
    with Chromium(CHROMIUM) as browser:
        yield browser


def text_of(element_id: str) -> str:
    return f"(document.getElementById({json.dumps(element_id)}) || {{}}).textContent"


def open_live(page: Chromium, url: str) -> None:
    page.goto(url)
    page.wait_for(f"{text_of('conn')} === 'live'")


def rows(selector: str) -> str:
    return f"document.querySelectorAll({json.dumps(selector)}).length"


def test_status_page_updates_live_while_a_computation_runs(
    page: Chromium, client: Client, cluster: LocalCluster
) -> None:
    assert cluster.dashboard_link
    open_live(page, cluster.dashboard_link)
    assert page.evaluate(f"{text_of('c-workers')}") == "2"
    assert page.evaluate("window.rdistSocket.usePolling") is False  # the WebSocket transport

    futures = client.map(slow_square, range(80))
    bad = client.submit(failing_task, 1)
    # while it runs: counts, progress and the task stream change without a reload
    page.wait_for(f"/[1-9]\\d* processing/.test({text_of('c-tasks-sub')})", timeout=15)
    page.wait_for("document.querySelector('[data-group=\"slow_square\"]') !== null")
    page.wait_for("document.getElementById('ts-empty').hidden === true")
    page.screenshot(ARTIFACTS / "dashboard-status-running.png")

    assert client.gather(futures) == [x * x for x in range(80)]
    with pytest.raises(ValueError):
        bad.result()
    page.wait_for(
        "(document.querySelector('[data-group=\"slow_square\"] .counts') || {})"
        ".textContent === '80 / 80'",
        timeout=15,
    )
    page.wait_for(f"/1 erred/.test({text_of('c-tasks-sub')})")
    page.screenshot(ARTIFACTS / "dashboard-status.png")


def test_workers_page_lists_every_worker_and_sorts(page: Chromium, cluster: LocalCluster) -> None:
    open_live(page, cluster.dashboard_link + "workers")
    page.wait_for(f"{rows('#workers tbody tr')} === 2")
    names = (
        "Array.from(document.querySelectorAll('#workers tbody tr td:first-child'))"
        ".map(td => td.textContent)"
    )
    first = page.evaluate(names)
    assert sorted(first) == first and all(n.startswith(cluster.cluster_name) for n in first)
    page.evaluate("document.querySelector('#workers th[data-key=\"name\"]').click()")
    assert page.evaluate(names) == sorted(first, reverse=True)
    page.wait_for(
        "document.querySelector('#workers tbody td:last-child').textContent.endsWith('ago')"
    )
    page.screenshot(ARTIFACTS / "dashboard-workers.png")


def test_tasks_page_finds_a_task_and_shows_its_error(
    page: Chromium, client: Client, cluster: LocalCluster
) -> None:
    bad = client.submit(failing_task, 2)
    with pytest.raises(ValueError):
        bad.result()
    open_live(page, cluster.dashboard_link + "tasks")
    page.evaluate(
        "document.getElementById('q').value = 'failing_task'; "
        "document.querySelector('#task-search button[type=submit]').click()"
    )
    page.wait_for(
        f"{rows('#tasks tbody tr')} >= 1 && Array.from(document.querySelectorAll("
        "'#tasks a.key')).every(a => a.dataset.key.startsWith('failing_task'))"
    )
    page.evaluate(f"document.querySelector('#tasks a.key[data-key={json.dumps(bad.key)}]').click()")
    page.wait_for(f"{text_of('d-error-text')} === 'ValueError: planned failure 2'")
    assert "raise ValueError" in page.evaluate(text_of("d-traceback"))
    assert page.evaluate(f"{rows('#d-runs tbody tr')}") >= 1
    page.screenshot(ARTIFACTS / "dashboard-tasks.png")


def test_polling_transport_also_delivers_updates(page: Chromium, cluster: LocalCluster) -> None:
    open_live(page, cluster.dashboard_link + "workers")
    got = page.evaluate("""new Promise((resolve, reject) => {
        const socket = new RdistSocket();
        socket.usePolling = true;
        socket.on('connect', () => socket.emit('subscribe', ['workers']));
        socket.on('workers', (msg) => { socket.disconnect(); resolve(msg.workers.length); });
        setTimeout(() => reject(new Error('no update over long-polling')), 10000);
        socket.connect();
    })""")
    assert got == 2


def test_events_page_shows_a_worker_joining_live(page: Chromium, cluster: LocalCluster) -> None:
    open_live(page, cluster.dashboard_link + "events")
    page.wait_for(f"{rows('#events tbody tr')} >= 2")
    before = page.evaluate(rows("#events tbody tr"))
    cluster.scale(3)
    cluster.wait_for_workers(3, timeout=30)
    page.wait_for(
        f"{rows('#events tbody tr')} > {before} && "
        "document.querySelector('#events tbody tr').textContent.includes('worker-3')"
    )
    page.screenshot(ARTIFACTS / "dashboard-events.png")
    cluster.scale(2)


def test_a_token_protected_dashboard_opens_with_the_token(
    page: Chromium, cluster: LocalCluster
) -> None:
    from rdist.config import load_config
    from rdist.web.serve import DashboardServer

    overrides = {
        "redis.url": cluster.redis_url,
        "redis.cluster": cluster.cluster_name,
        "dashboard.port": 0,
        "dashboard.token": "open-sesame",
    }
    server = DashboardServer(load_config(overrides, env={}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(server.url + "workers")
        page.wait_for("document.body.textContent.includes('needs its token')")
        page.screenshot(ARTIFACTS / "dashboard-login.png")
        # the form sends ?token=...; the server answers with a cookie and a clean URL
        page.evaluate(
            "document.querySelector('input[name=token]').value = 'open-sesame';"
            "document.querySelector('.login form').submit()"
        )
        page.wait_for(f"{text_of('conn')} === 'live' && !location.search.includes('token')")
        page.wait_for(f"{rows('#workers tbody tr')} >= 2")  # the socket got in with the cookie
    finally:
        server.shutdown()
        thread.join(10)
