"""Nanny-side plugins with real processes (issue 13): ``Environ`` restarts every worker
with its variables, ``UploadDirectory`` puts a package on every worker (unpacked by the
nannies with ``restart_workers``), and a nanny plugin stays with its nanny: a worker the
nanny starts again after a SIGKILL still gets what the plugin set up, without a second
setup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdist import Client, Environ, LocalCluster, UploadDirectory, wait
from tests.client_helpers import wait_until
from tests.extension_tasks import (
    NANNY_MARK,
    CountingNannyPlugin,
    import_value,
    read_env,
    worker_pid,
)

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]


@pytest.fixture
def nannied(redis_url: str) -> Iterator[Client]:
    """Two workers, each under a nanny."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            nanny=True,
            redis_url=redis_url,
            dashboard_address=None,
        ) as cluster,
        Client(cluster, timeout=30) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        yield client


def _on_every_worker(client: Client, fn: Any, *args: Any) -> dict[str, Any]:
    """``fn(*args)`` run as a task on each worker present, by address (a task rather than
    ``client.run``: a worker being restarted never answers a run)."""
    workers = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(fn, *args, workers=[w], pure=False) for w in workers]
    try:
        wait(futures, timeout=10)
    except TimeoutError:
        client.cancel(futures)
        raise
    return dict(zip(workers, client.gather(futures)))


def _answers_or_none(client: Client, fn: Any, *args: Any) -> dict[str, Any] | None:
    try:
        return _on_every_worker(client, fn, *args)
    except Exception:  # a worker restarting
        return None


def _back_after_kill(client: Client, victim: int) -> None:
    def back() -> bool:
        pids = _answers_or_none(client, worker_pid)
        return pids is not None and len(pids) == 2 and victim not in pids.values()

    wait_until(back, timeout=60, what="the killed worker back")


def _until_every_worker_says(client: Client, fn: Any, args: tuple[Any, ...], want: Any) -> None:
    def agreed() -> bool:
        got = _answers_or_none(client, fn, *args)
        return got is not None and len(got) == 2 and all(v == want for v in got.values())

    wait_until(agreed, timeout=60, what=f"every worker to answer {want!r}")


def _kill_one_worker(client: Client) -> int:
    pids = _on_every_worker(client, worker_pid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    return victim


def test_environ_restarts_every_worker_with_its_variables(nannied: Client) -> None:
    assert set(_on_every_worker(nannied, read_env, "RDIST_TEST_ENVIRON").values()) == {None}
    before = set(_on_every_worker(nannied, worker_pid).values())

    nannied.register_plugin(Environ({"RDIST_TEST_ENVIRON": 42}))

    _until_every_worker_says(nannied, read_env, ("RDIST_TEST_ENVIRON",), "42")
    assert not before & set(_on_every_worker(nannied, worker_pid).values())  # new processes
    # and a worker its nanny starts again keeps them
    victim = _kill_one_worker(nannied)
    _back_after_kill(nannied, victim)
    _until_every_worker_says(nannied, read_env, ("RDIST_TEST_ENVIRON",), "42")


def _package(tmp_path: Path, value: int) -> Path:
    root = tmp_path / "shipped"
    (root / "shipped_pkg").mkdir(parents=True)
    (root / "shipped_pkg" / "__init__.py").write_text(f"VALUE = {value}\n")
    return root


def test_upload_directory_puts_a_package_on_every_worker(nannied: Client, tmp_path) -> None:
    root = _package(tmp_path, 7)

    nannied.register_plugin(UploadDirectory(str(root / "shipped_pkg"), update_path=False))
    nannied.register_plugin(UploadDirectory(str(root), update_path=True))

    values = _on_every_worker(nannied, import_value, "shipped_pkg")
    assert list(values.values()) == [7, 7]


def test_upload_directory_restarting_workers_is_unpacked_by_every_nanny(
    nannied: Client, tmp_path
) -> None:
    root = _package(tmp_path, 8)

    nannied.register_plugin(UploadDirectory(str(root), restart_workers=True, update_path=True))

    _until_every_worker_says(nannied, import_value, ("shipped_pkg",), 8)


def test_a_nanny_plugin_stays_with_its_nanny_when_the_worker_is_started_again(
    nannied: Client, tmp_path
) -> None:
    count = tmp_path / "setups.txt"
    plugin = CountingNannyPlugin(str(count))
    plugin.restart = True  # the variable reaches only worker processes started after setup

    nannied.register_plugin(plugin, name="counting")

    _until_every_worker_says(nannied, read_env, (NANNY_MARK,), "from-the-nanny-plugin")
    assert count.read_text().splitlines() == ["setup", "setup"]  # once per nanny
    victim = _kill_one_worker(nannied)
    _back_after_kill(nannied, victim)
    _until_every_worker_says(nannied, read_env, (NANNY_MARK,), "from-the-nanny-plugin")
    assert count.read_text().splitlines() == ["setup", "setup"]  # not set up again
