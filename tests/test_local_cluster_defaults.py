"""LocalCluster() with dask's defaults: a nanny per worker process (a killed worker comes
back; a task that keeps killing its worker ends in KilledWorker) and a dashboard on :8787,
or on a free port when that one is taken."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

import pytest

from rdist import Client, KilledWorker, LocalCluster
from tests.client_helpers import wait_until

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]


def die() -> None:
    os._exit(13)


def pid() -> int:
    return os.getpid()


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_defaults_restart_a_killed_worker_and_serve_a_dashboard() -> None:
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        assert cluster.nanny and cluster.dashboard_link
        assert client.dashboard_link == cluster.dashboard_link
        with urllib.request.urlopen(cluster.dashboard_link + "api/workers", timeout=10) as r:
            assert r.status == 200
        for text in (repr(cluster), cluster._repr_html_(), client._repr_html_()):
            assert "dashboard" in text.lower()
        first = client.submit(pid, pure=False).result(timeout=30)
        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: client.submit(pid, pure=False).result(timeout=30) != first,
            timeout=60,
            what="a new worker from the nanny",
        )


def test_a_task_that_kills_every_worker_it_meets_ends_in_killed_worker() -> None:
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        start = time.monotonic()
        with pytest.raises(KilledWorker):
            client.submit(die, pure=False).result(timeout=120)
        assert time.monotonic() - start < 120
        assert client.submit(pid, pure=False).result(timeout=60) > 0  # and work goes on


def test_a_taken_dashboard_port_gives_a_warning_and_another_port() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        port = squatter.getsockname()[1]
        with (
            pytest.warns(UserWarning, match=f"Port {port} is already in use"),
            LocalCluster(n_workers=0, dashboard_address=f":{port}", nanny=False) as cluster,
        ):
            assert cluster.dashboard_link and f":{port}/" not in cluster.dashboard_link
            assert _port_taken(int(cluster.dashboard_link.rsplit(":", 1)[1].strip("/")))
