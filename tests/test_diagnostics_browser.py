"""A performance report opened in headless Chromium draws every plot: as many task and
transfer rectangles as the run had, a bar per task group and span, a line per worker,
a flame graph, the events -- from the file alone (no server, no network)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

import rdist
from tests.chromium import Chromium, find_chromium
from tests.conftest import fake_cluster
from tests.test_diagnostics import busy, fail, two_worker_transfer

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(
        "chromium is not installed (apt-get install -y chromium); the browser tests need it",
        allow_module_level=True,
    )

COUNTS = """JSON.stringify({
  tasks: document.querySelectorAll("svg.task-stream rect.task").length,
  transfers: document.querySelectorAll("svg.task-stream rect.transfer").length,
  groups: document.querySelectorAll("tr.groups-row").length,
  group_bars: document.querySelectorAll("svg.groups-bars rect.total-bar").length,
  spans: [...document.querySelectorAll("tr.spans-row td.name")].map((td) => td.textContent),
  transfer_rows: document.querySelectorAll("tr.transfer-row").length,
  memory_lines: document.querySelectorAll("svg.memory-chart polyline.series-line").length,
  cpu_lines: document.querySelectorAll("svg.cpu-chart polyline.series-line").length,
  frames: [...document.querySelectorAll("svg.flame rect.frame")].length,
  frame_names: [...document.querySelectorAll("svg.flame text")].map((t) => t.textContent),
  events: document.querySelectorAll("tr.event-row").length,
  scripts_with_src: document.querySelectorAll("script[src]").length,
})"""


def _report(path: Path) -> dict[str, Any]:
    """Run a small computation of every kind inside a report; what it should show."""
    with fake_cluster(2) as (c, cluster):
        with rdist.performance_report(filename=str(path)):
            with rdist.span("crunch"):
                c.gather(c.map(busy, range(6), seconds=0.1))
            bad = c.submit(fail, 1)
            rdist.wait([bad], timeout=10)
            two_worker_transfer(c, cluster).result(timeout=10)
        return {"workers": len(cluster.workers)}


def test_a_performance_report_draws_every_plot_in_chromium(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    expected = _report(target)
    data = json.loads(target.read_text().split('id="report-data">', 1)[1].split("</script>")[0])
    computes = [r for r in data["task_stream"] if r["startstops"][0]["action"] == "compute"]

    with Chromium(CHROMIUM) as page:
        page.goto(target.as_uri())
        page.wait_for("document.body.dataset.drawn === 'true'", timeout=20)
        counts = json.loads(page.evaluate(COUNTS))
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(ARTIFACTS / f"performance-report-{int(time.time())}.png")

    assert len(computes) == 6 + 1 + 3  # busy, fail, two arrays and their total
    assert counts["tasks"] == len(computes)
    assert counts["transfers"] == counts["transfer_rows"] == 1
    assert counts["groups"] == counts["group_bars"] == 4  # busy, fail, array, total
    assert counts["spans"] == ["crunch"]
    assert counts["memory_lines"] == counts["cpu_lines"] == expected["workers"]
    assert counts["frames"] >= 2 and "busy" in counts["frame_names"]
    assert counts["events"] >= 1
    assert counts["scripts_with_src"] == 0
