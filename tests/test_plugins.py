"""Plugins on a fakeredis cluster: worker plugins set up on every worker present and joining,
torn down on unregister, their transition hook called; a failing setup raised at the
registering call; UploadFile; scheduler plugins refused from clients unless the scheduler
opted in, and their hooks called when it did."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rdist import Client, PipInstall, SchedulerPlugin, UploadFile, WorkerPlugin
from rdist.scheduler.server import SchedulerServer
from tests.conftest import FakeCluster, fake_cluster


def inc(x: int) -> int:
    return x + 1


class Marks(WorkerPlugin):
    """Leaves its marks on the worker object it runs in (the workers are threads here)."""

    name = "marks"

    def setup(self, worker: Any) -> None:
        worker.marks = ["setup"]
        self.worker = worker

    def teardown(self, worker: Any) -> None:
        worker.marks.append("teardown")

    def transition(self, key: str, start: str, finish: str, **kwargs: Any) -> None:
        self.worker.marks.append((start, finish))


class BrokenSetup(WorkerPlugin):
    def setup(self, worker: Any) -> None:
        raise RuntimeError("setup refused")


class Counting(SchedulerPlugin):
    def __init__(self) -> None:
        self.transitions: list[tuple[str, str, str]] = []

    def transition(self, key: str, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        self.transitions.append((key, start, finish))


@pytest.fixture
def pair() -> Iterator[tuple[Client, FakeCluster]]:
    with fake_cluster() as pair:
        yield pair


def eventually(check: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def test_a_worker_plugin_is_set_up_on_every_worker_now_and_joining_later(pair) -> None:
    c, cluster = pair
    answers = c.register_plugin(Marks())

    assert set(answers) == {w.address for w in cluster.workers}
    assert all(a["status"] == "OK" for a in answers.values())
    assert all(getattr(w, "marks", None) == ["setup"] for w in cluster.workers)
    late = cluster.add_worker(nthreads=1, name="late")
    assert eventually(lambda: getattr(late, "marks", None) == ["setup"])


def test_the_transition_hook_sees_tasks_run(pair) -> None:
    c, cluster = pair
    c.register_plugin(Marks())

    future = c.submit(inc, 1)
    future.result(timeout=5)

    def finished() -> list[str]:
        marks = [m for w in cluster.workers for m in w.marks if isinstance(m, tuple)]
        return [finish for _, finish in marks]

    assert "memory" in eventually(lambda: "memory" in finished() and finished())


def test_unregistering_tears_the_plugin_down_everywhere(pair) -> None:
    c, cluster = pair
    c.register_plugin(Marks())

    c.unregister_worker_plugin("marks")

    assert all(w.marks[-1] == "teardown" for w in cluster.workers)
    with pytest.raises(ValueError, match="does not exist"):
        c.unregister_worker_plugin("marks")


def test_a_failing_setup_is_raised_at_the_registering_call(pair) -> None:
    c, _ = pair

    with pytest.raises(RuntimeError, match="setup refused"):
        c.register_plugin(BrokenSetup(), name="broken")


def test_upload_file_puts_a_module_on_every_worker(pair, tmp_path) -> None:
    c, cluster = pair
    source = tmp_path / "uploaded_mod_rdist_test.py"
    source.write_text("ANSWER = 42\n")
    c.register_plugin(UploadFile(str(source)))

    def read() -> int:
        import uploaded_mod_rdist_test  # type: ignore[import-not-found]

        return uploaded_mod_rdist_test.ANSWER

    assert c.submit(read, pure=False).result(timeout=10) == 42
    for w in cluster.workers:
        assert os.path.exists(os.path.join(w.local_directory, source.name))


def test_a_scheduler_plugin_from_a_client_is_refused_with_how_to_allow_it(pair) -> None:
    c, _ = pair

    with pytest.raises(Exception, match="accept-client-plugins"):
        c.register_plugin(Counting())


def test_a_scheduler_plugin_added_in_the_scheduler_sees_transitions(pair) -> None:
    c, cluster = pair
    scheduler: SchedulerServer = cluster.scheduler
    plugin = Counting()
    scheduler.add_plugin(plugin, name="counting")

    future = c.submit(inc, 1)
    future.result(timeout=5)

    assert eventually(
        lambda: any(k == future.key and f == "memory" for k, _, f in plugin.transitions)
    )


def _build_wheel(where: Any, name: str) -> str:
    """A pure-Python wheel made by hand (no network, no build backend)."""
    import zipfile

    files = {
        f"{name}/__init__.py": "VALUE = 'installed'\n",
        f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
        f"{name}-0.1.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},,\n" for path in files) + f"{name}-0.1.dist-info/RECORD,,\n"
    files[f"{name}-0.1.dist-info/RECORD"] = record
    path = str(where / f"{name}-0.1-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
    return path


def test_pip_install_installs_a_local_wheel_on_every_worker(pair, tmp_path) -> None:
    c, cluster = pair
    wheel = _build_wheel(tmp_path, "rdist_wheel_probe")
    target = tmp_path / "site"  # --target: the shared environment stays untouched

    answers = c.register_plugin(
        PipInstall([wheel], pip_options=["--no-index", "--no-deps", "--target", str(target)])
    )

    assert set(answers) == {w.address for w in cluster.workers}
    assert (target / "rdist_wheel_probe" / "__init__.py").read_text() == "VALUE = 'installed'\n"


def test_a_failing_pip_install_is_raised_at_the_registering_call(pair, tmp_path) -> None:
    c, _ = pair

    with pytest.raises(RuntimeError, match="pip install failed"):
        c.register_plugin(PipInstall([str(tmp_path / "missing-0.1-py3-none-any.whl")]))


def _swap_scheduler(cluster: FakeCluster, **kwargs: Any) -> SchedulerServer:
    """Stop the cluster's scheduler; a new one (a standby taking over) leads in its place."""
    import threading

    cluster.scheduler.stop()
    cluster._thread.join(timeout=10)
    cluster.scheduler = SchedulerServer.from_url(cluster.url, cluster.cluster_name, **kwargs)
    cluster._thread = threading.Thread(target=cluster.scheduler.run, daemon=True)
    cluster._thread.start()
    return cluster.scheduler


def test_a_scheduler_started_accepting_client_plugins_runs_one_and_so_does_its_successor(
    pair,
) -> None:
    c, cluster = pair
    first = _swap_scheduler(cluster, accept_client_plugins=True)
    c.register_plugin(Counting(), name="counting")
    assert eventually(lambda: "counting" in first.plugins)

    successor = _swap_scheduler(cluster, accept_client_plugins=True)
    assert eventually(lambda: "counting" in successor.plugins, timeout=15)
    future = c.submit(inc, 5)
    assert future.result(timeout=15) == 6

    plugin = successor.plugins["counting"]
    assert eventually(
        lambda: any(k == future.key and f == "memory" for k, _, f in plugin.transitions)
    )
