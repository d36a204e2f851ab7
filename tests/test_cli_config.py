"""``rdist scheduler``, ``rdist worker`` and ``Client()`` as real processes, configured as an
operator would: a YAML file and nothing else, or one nested environment variable."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from rdist import Client
from rdist.embedded import EmbeddedRedis
from tests.client_helpers import wait_until
from tests.test_cli import Processes, clean_env, procs  # noqa: F401  (procs: a fixture)

pytestmark = [pytest.mark.cli, pytest.mark.usefixtures("subprocess_pythonpath")]


def no_settings(**extra: str) -> dict[str, str]:
    """The environment without any RDIST_*/DASK_* setting, Redis URL or YAML file."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("RDIST_", "DASK_"))}
    return {**env, "HOME": "/nonexistent", **extra}


def workers_of(client: Client) -> dict[str, dict[str, object]]:
    return dict(client.scheduler_info()["workers"])


def test_yaml_file_configures_scheduler_worker_and_client(
    redis_server: EmbeddedRedis,
    procs: Processes,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given one YAML file with the URL, the cluster, a short worker TTL and 3 threads
    cluster = f"yaml-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "rdist.yaml"
    config.write_text(
        f"redis:\n  url: {redis_server.url}\n  cluster: {cluster}\n"
        "scheduler:\n  worker_ttl: 1.5\nworker:\n  nthreads: 3\n  nanny: false\n"
    )
    env = no_settings(RDIST_CONFIG=str(config))
    # when the roles start with no flag at all
    procs.start("scheduler", env=env)
    worker = procs.start("worker", env=env)
    for name in list(os.environ):
        if name.startswith(("RDIST_", "DASK_")) or name == "REDIS_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RDIST_CONFIG", str(config))
    with Client(set_as_default=False, timeout=30) as client:  # the file's cluster, not a new one
        assert client.cluster is None and client.cluster_name == cluster
        client.wait_for_workers(1, timeout=30)
        # then the worker runs the file's threads...
        assert [w["nthreads"] for w in workers_of(client).values()] == [3], procs.logs()
        # ...and the scheduler removes a silent worker after the file's 1.5 s, not 15 s
        os.kill(worker.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_until(lambda: not workers_of(client), timeout=10, what="worker removed")
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert time.monotonic() - stopped < 10


def test_nested_env_sets_worker_threads_and_url_is_positional(
    redis_server: EmbeddedRedis,
    procs: Processes,  # noqa: F811
) -> None:
    # given a scheduler, and a worker (under its nanny) told its threads by one variable
    cluster = f"env-{uuid.uuid4().hex[:8]}"
    procs.start(
        "scheduler", "--redis-url", redis_server.url, "--cluster", cluster, env=no_settings()
    )
    env = no_settings(RDIST_WORKER__NTHREADS="4", RDIST_REDIS__CLUSTER=cluster)
    procs.start("worker", redis_server.url, env=env)  # dask's habit: the URL positional
    with Client(redis_server.url, cluster_name=cluster, set_as_default=False) as client:
        client.wait_for_workers(1, timeout=30)
        # then it runs four threads
        assert [w["nthreads"] for w in workers_of(client).values()] == [4], procs.logs()


def test_a_lease_too_short_to_hold_stops_the_scheduler_at_start_naming_the_setting(
    redis_server: EmbeddedRedis,
) -> None:
    import subprocess
    import sys

    env = no_settings(RDIST_SCHEDULER__LEASE_TTL="0.01")
    done = subprocess.run(
        [sys.executable, "-m", "rdist", "scheduler", "--redis-url", redis_server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2, done.stderr
    assert "at least 0.1 s, not 0.01 s: set scheduler.lease_ttl" in done.stderr
    assert "Traceback" not in done.stderr
