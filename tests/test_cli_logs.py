"""``--log-level`` of the console script: checked, any case; it quiets stderr only -- the
role's log buffer in Redis keeps its INFO lines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from rdist.client.logs import scheduler_logs
from rdist.store import connect

pytestmark = [pytest.mark.cli, pytest.mark.usefixtures("subprocess_pythonpath")]


def _rdist(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rdist", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("role", ["scheduler", "worker", "dashboard", "local"])
def test_a_log_level_that_does_not_exist_is_refused_naming_the_choices(role):
    done = _rdist(role, "--log-level", "nonsense")

    assert done.returncode == 2
    assert "Invalid value for '--log-level': 'nonsense' is not one of" in done.stderr
    assert "'debug', 'info', 'warning', 'error', 'critical'" in done.stderr


def test_a_log_level_in_capitals_is_accepted():
    done = _rdist(
        "worker", "--log-level", "WARNING", "--no-nanny", "--redis-url", "redis://127.0.0.1:1",
        "--timeout", "0.2",
    )  # fmt: skip

    assert done.returncode == 1  # Redis did not answer: past the option check
    assert "did not answer" in done.stderr and "Invalid value" not in done.stderr


def test_warning_quiets_stderr_but_the_buffer_keeps_the_info_lines(redis_url):
    cluster = f"cli-logs-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rdist", "scheduler", "--redis-url", redis_url,
         "--cluster", cluster, "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )  # fmt: skip
    store = connect(redis_url, cluster)
    try:
        deadline = time.monotonic() + 30
        while not any("is the leader" in line for _, line in scheduler_logs(store)):
            assert proc.poll() is None and time.monotonic() < deadline, "no leader line"
            time.sleep(0.1)
        lines = scheduler_logs(store)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        store.close()

    assert any(level == "INFO" and "starting for cluster" in line for level, line in lines)
    assert " INFO " not in err  # (stderr shows WARNING and above only)


def test_the_dashboard_says_who_it_is_when_it_starts(redis_url):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rdist", "dashboard", "--redis-url", redis_url,
         "--cluster", "dash-logs", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        link = proc.stdout.readline().strip().rpartition(" at ")[2] if proc.stdout else ""
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)

    assert link.startswith("http://127.0.0.1:")
    assert f"dashboard (pid {proc.pid}) for cluster 'dash-logs' on {redis_url} at {link}" in err
