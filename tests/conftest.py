"""Fixtures for the three tiers: pure, fakeredis (whole cluster in-process), real Redis."""

from __future__ import annotations

import gc
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rdist import Client
from rdist.embedded import EmbeddedRedis
from rdist.scheduler.server import SchedulerServer
from rdist.store import connect
from rdist.store.connection import drop_fake_server
from rdist.worker.server import Worker


class FakeCluster:
    """Scheduler and workers as threads of this process over one fakeredis server."""

    def __init__(self, n_workers: int = 2, nthreads: int = 1, **worker_kwargs: Any) -> None:
        self.url = f"fakeredis://{uuid.uuid4().hex}"
        self.cluster_name = "test"
        self.redis_url = self.url
        self.scheduler = SchedulerServer.from_url(self.url, self.cluster_name)
        self._thread = threading.Thread(target=self.scheduler.run, daemon=True)
        self._thread.start()
        self.workers: list[Worker] = []
        for i in range(n_workers):
            self.add_worker(nthreads=nthreads, name=f"w{i}", **worker_kwargs)

    def add_worker(self, **kwargs: Any) -> Worker:
        worker = Worker(connect(self.url, self.cluster_name), **kwargs)
        worker.start()
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """Check every live worker's state machine, then stop everything."""
        try:
            for worker in self.workers:
                if not worker.stop_event.is_set():
                    with worker.lock:
                        worker.state.validate_state()
        finally:
            for worker in self.workers:
                worker.close()
            self.scheduler.stop()
            self._thread.join(timeout=5)
            drop_fake_server(self.url[len("fakeredis://") :])


@contextmanager
def fake_cluster(
    n_workers: int = 2, nthreads: int = 1, **kwargs: Any
) -> Iterator[tuple[Client, FakeCluster]]:
    cluster = FakeCluster(n_workers, nthreads, **kwargs)
    client = Client(cluster, set_as_default=True)
    try:
        client.wait_for_workers(n_workers, timeout=10)
        yield client, cluster
    finally:
        client.close()
        gc.collect()
        cluster.close()
        cluster.scheduler.state.validate_state()


@pytest.fixture
def c() -> Iterator[Client]:
    """A client on a fakeredis cluster of two one-thread workers."""
    with fake_cluster() as (client, _):
        yield client


@pytest.fixture
def cluster_and_client() -> Iterator[tuple[Client, FakeCluster]]:
    with fake_cluster() as pair:
        yield pair


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server (the binary the embedded default uses) on a free TCP port."""
    server = EmbeddedRedis(port=free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def subprocess_pythonpath() -> Iterator[None]:
    """Worker subprocesses import test helpers by reference: the repo root goes on their path."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root, old] if old else [root])
    yield
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture
def gates() -> Iterator[Any]:
    """Events that tasks block on (``tests.client_helpers.wait_gate``); all opened at teardown.

    Request it after the cluster fixture so the gates open before the cluster closes.
    """
    from tests.client_helpers import Gates

    g = Gates()
    yield g
    g.open_all()


@pytest.fixture
def cluster(redis_url: str) -> Iterator[Any]:
    """Two one-thread worker processes and a scheduler process on the shared test Redis."""
    from rdist import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        redis_url=redis_url,
        name=f"real-{uuid.uuid4().hex}",
        timeout=30,
        nanny=False,
        dashboard_address=None,
    ) as lc:
        yield lc


@pytest.fixture
def client(cluster: Any) -> Iterator[Client]:
    """A client of the process ``cluster``, once both workers are up."""
    with Client(cluster, timeout=30) as c:
        c.wait_for_workers(2, timeout=20)
        yield c


# -- tiers ---------------------------------------------------------------------------------
#: The tier of each test module: ``pytest -m pure`` runs in seconds, ``-m fake`` in a minute.
#: A test in a module of a lower tier that uses a real Redis (the fixtures below) is ``real``.
#: A new test module must be listed here (collection fails otherwise).
MODULE_TIERS = {
    "test_browser": "browser",
    "test_browser_pages": "browser",
    "test_chaos": "chaos",
    "test_cli": "cli",
    "test_cli_boundary": "cli",
    "test_cli_config": "cli",
    "test_cli_logs": "cli",
    "test_client_boundary": "fake",
    "test_client_compact": "pure",
    "test_client_data": "fake",
    "test_client_dataplane": "fake",
    "test_client_executor": "fake",
    "test_client_extras": "fake",
    "test_client_async": "fake",
    "test_client_errors": "fake",
    "test_client_inbox": "fake",
    "test_actors": "fake",
    "test_adaptive": "pure",
    "test_adaptive_dashboard": "fake",
    "test_amm": "pure",
    "test_amm_fake": "fake",
    "test_amm_real": "real",
    "test_client_lifetime": "fake",
    "test_client_logs": "fake",
    "test_client_redis_loss": "fake",
    "test_client_restart": "fake",
    "test_client_rooms": "fake",
    "test_client_scheduling": "fake",
    "test_client_sender": "real",
    "test_client_story": "fake",
    "test_client_stream_loss": "real",
    "test_client_stream_watch": "fake",
    "test_client_submit": "fake",
    "test_client_waiting": "fake",
    "test_comm": "pure",
    "test_comm_integrity": "pure",
    "test_comm_security": "pure",
    "test_config": "pure",
    "test_config_docs": "pure",
    "test_config_keys": "fake",
    "test_dask_collections": "fake",
    "test_dask_examples": "fake",
    "test_dask_examples_real": "real",
    "test_dask_doc_examples": "real",
    "test_dask_doc_examples_more": "real",
    "test_tracebacks": "pure",
    "test_metadata": "fake",
    "test_topics": "fake",
    "test_versions": "fake",
    "test_default_client": "fake",
    "test_datasets": "fake",
    "test_deploy": "pure",
    "test_diagnostics": "fake",
    "test_diagnostics_browser": "browser",
    "test_diagnostics_pure": "pure",
    "test_diagnostics_real": "real",
    "test_deploy_kubernetes": "pure",
    "test_extension_kills": "real",
    "test_fuzz": "fake",
    "test_fuzz_real": "real",
    "test_gather_recovery": "fake",
    "test_gather_recovery_real": "real",
    "test_graph_and_keys": "fake",
    "test_import_layers": "pure",
    "test_memory": "pure",
    "test_lease_kills": "real",
    "test_local_cluster_defaults": "real",
    "test_logbuffer": "fake",
    "test_multihost": "real",
    "test_plugins": "fake",
    "test_plugins_real": "real",
    "test_primitives": "fake",
    "test_protocol": "pure",
    "test_public_api": "pure",
    "test_rawpipe": "fake",
    "test_real_cluster": "real",
    "test_real_comm_security": "real",
    "test_real_dataplane": "real",
    "test_real_boundary": "real",
    "test_real_faults": "real",
    "test_real_retire_adapt": "real",
    "test_real_logs": "real",
    "test_real_redis_cluster": "real",
    "test_real_redis_loss": "real",
    "test_real_sentinel": "real",
    "test_redis_loss_reconcile": "pure",
    "test_redis_restart_pending": "real",
    "test_resilience": "real",
    "test_scale_bounds": "fake",
    "test_scale_commands": "fake",
    "test_scale_packing": "pure",
    "test_scheduler_dataops": "pure",
    "test_scheduler_outbox": "pure",
    "test_scheduler_retire": "pure",
    "test_scheduler_server": "fake",
    "test_scheduler_leaks": "fake",
    "test_soak": "real",
    "test_scheduler_server_pending": "fake",
    "test_scheduler_siblings": "pure",
    "test_scheduler_state": "pure",
    "test_scheduler_state_recovery": "pure",
    "test_scheduler_transitions": "pure",
    "test_shared_futures": "fake",
    "test_shuffle": "fake",
    "test_shuffle_inbox": "pure",
    "test_shuffle_kill": "real",
    "test_shuffle_rechunk": "pure",
    "test_shuffle_rechunk_cluster": "fake",
    "test_shuffle_rechunk_kill": "real",
    "test_scheduling_policy": "pure",
    "test_store_health": "pure",
    "test_store_primitives": "fake",
    "test_store_topology": "pure",
    "test_web": "fake",
    "test_web_pages": "fake",
    "test_wire": "pure",
    "test_worker_execution": "pure",
    "test_worker_heartbeats": "pure",
    "test_worker_reschedule": "pure",
    "test_worker_server": "fake",
    "test_worker_state": "pure",
}
TIERS = ("pure", "fake", "real", "cli", "browser", "chaos")
#: fixtures that start (or need) a real redis-server
REAL_FIXTURES = frozenset({"redis_server", "redis_url", "cluster", "client"})


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """Give every test exactly its tier's marker (see MODULE_TIERS)."""
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module not in MODULE_TIERS:
            raise pytest.UsageError(
                f"{module} has no tier: add it to MODULE_TIERS in tests/conftest.py"
            )
        explicit = [m.name for m in item.iter_markers() if m.name in TIERS]
        if explicit:
            continue
        uses_real = REAL_FIXTURES & set(getattr(item, "fixturenames", ()))
        tier = MODULE_TIERS[module]
        if uses_real and tier in ("pure", "fake"):
            tier = "real"
        item.add_marker(getattr(pytest.mark, tier))
