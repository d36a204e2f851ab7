"""Every setting, one test each: set it as an operator would (nested env form, YAML file,
dask's configuration) and watch the role that reads it do what it says.

``KEY_TESTS`` maps each setting of :data:`rdist.settings.SETTINGS` to its test, and
``test_every_setting_has_a_test`` fails when a setting is added without one. The roles run
in this process over fakeredis where they can; ``tests/test_cli_config.py`` starts the
real ``rdist scheduler`` and ``rdist worker`` processes from a YAML file.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rdist import Client, SchedulerPlugin
from rdist.cli_worker import WorkerSettings
from rdist.comm.security import Security
from rdist.config import load_config
from rdist.scheduler.server import SchedulerServer
from rdist.settings import BY_NAME, SETTINGS
from rdist.store import connect
from rdist.store.connection import _tls_options, drop_fake_server
from rdist.worker.memory import MemoryFractions
from tests.conftest import FakeCluster, free_port

Check = Callable[[pytest.MonkeyPatch, Path], None]
KEY_TESTS: dict[str, Check] = {}


def key_test(name: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        assert name in BY_NAME, f"{name} is no setting"
        KEY_TESTS[name] = check
        return check

    return register


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the machine's (a user's YAML file, RDIST_* or DASK_* variables) leaks
    into these tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("RDIST_", "DASK_")) or name in ("REDIS_URL", "PORT"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def yaml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rdist.yaml"
    path.write_text(text)
    monkeypatch.setenv("RDIST_CONFIG", str(path))
    return path


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    cluster = FakeCluster(n_workers=1)
    try:
        yield cluster
    finally:
        cluster.close()


def inc(x: int) -> int:
    return x + 1


def worker_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> WorkerSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return WorkerSettings.of(load_config())


#: fakeredis servers the schedulers of a test made, dropped after it
_SERVERS: list[str] = []


@pytest.fixture(autouse=True)
def drop_fake_servers() -> Iterator[None]:
    yield
    while _SERVERS:
        drop_fake_server(_SERVERS.pop())


def fake_url() -> str:
    """A fakeredis URL of its own, dropped after the test."""
    _SERVERS.append(uuid.uuid4().hex)
    return f"fakeredis://{_SERVERS[-1]}"


def scheduler_of(monkeypatch: pytest.MonkeyPatch, **env: str) -> SchedulerServer:
    """A scheduler (not running) built as a process builds it, with ``env`` set."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server = SchedulerServer(connect(fake_url(), "keys"))
    server.lease.store.close()
    return server


# -- redis ------------------------------------------------------------------------------------
@key_test("redis.url")
def url_from_yaml_is_where_client_connects(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    cluster = FakeCluster(n_workers=1)
    try:
        yaml_file(mp, tmp, f"redis:\n  url: {cluster.url}\n  cluster: {cluster.cluster_name}\n")
        with Client(set_as_default=False) as client:  # no address: the configured one
            assert client.cluster is None  # no embedded cluster was started
            assert client.redis_url == cluster.url
            assert client.submit(inc, 1).result(timeout=10) == 2
    finally:
        cluster.close()


@key_test("redis.cluster")
def cluster_name_from_env_is_the_one_client_joins(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    cluster = FakeCluster(n_workers=1)
    try:
        mp.setenv("RDIST_REDIS__URL", cluster.url)
        mp.setenv("RDIST_REDIS__CLUSTER", cluster.cluster_name)
        with Client(set_as_default=False) as client:
            assert client.cluster_name == "test"
            assert client.submit(inc, 2).result(timeout=10) == 3
    finally:
        cluster.close()


@key_test("redis.ssl_cert_reqs")
def certificate_checks_follow_the_setting(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert _tls_options("rediss://h:1")["ssl_cert_reqs"] == "required"
    mp.setenv("RDIST_REDIS__SSL_CERT_REQS", "optional")
    assert _tls_options("rediss://h:1") == {
        "ssl_cert_reqs": "optional",
        "ssl_check_hostname": False,
    }


# -- comm -------------------------------------------------------------------------------------
@key_test("comm.connect_timeout")
def client_gives_up_after_the_configured_timeout(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    url = f"fakeredis://{uuid.uuid4().hex}"  # Redis answers, no scheduler ever leads
    mp.setenv("RDIST_COMM__CONNECT_TIMEOUT", "300ms")
    start = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            Client(url, set_as_default=False)
    finally:
        drop_fake_server(url[len("fakeredis://") :])
    assert time.monotonic() - start < 5  # not the default 30 s


@key_test("comm.transfer")
def data_moves_the_configured_way(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    mp.setenv("RDIST_COMM__TRANSFER", "redis")
    cluster = FakeCluster(n_workers=1)
    try:
        assert cluster.workers[0].dataplane.mode == "redis"
        with Client(cluster, set_as_default=False) as client:
            assert client._data.mode == "redis"
    finally:
        cluster.close()


# -- scheduler --------------------------------------------------------------------------------
@key_test("scheduler.worker_ttl")
def scheduler_removes_workers_after_the_configured_ttl(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    yaml_file(mp, tmp, "scheduler:\n  worker_ttl: 60\n")
    assert scheduler_of(mp).worker_ttl == 60.0
    assert scheduler_of(mp, RDIST_SCHEDULER__WORKER_TTL="3").worker_ttl == 3.0  # env beats file
    mp.delenv("RDIST_SCHEDULER__WORKER_TTL")
    assert scheduler_of(mp, RDIST_WORKER_TTL="4").worker_ttl == 4.0  # the flat form too


@key_test("scheduler.client_ttl")
def scheduler_drops_clients_after_the_configured_ttl(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert scheduler_of(mp).client_ttl == BY_NAME["scheduler.client_ttl"].default
    assert scheduler_of(mp, RDIST_SCHEDULER__CLIENT_TTL="2s").client_ttl == 2.0


@key_test("scheduler.lease_ttl")
def scheduler_holds_its_lease_for_the_configured_ttl(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert scheduler_of(mp).lease.ttl_ms == 2000  # the default: fail-over within ~2 s
    yaml_file(mp, tmp, "scheduler:\n  lease_ttl: 5\n")
    assert scheduler_of(mp).lease.ttl_ms == 5000
    assert scheduler_of(mp, RDIST_SCHEDULER__LEASE_TTL="1.5s").lease.ttl_ms == 1500
    server = SchedulerServer(connect(fake_url(), "keys"), lease_ttl_ms=700)  # the argument wins
    server.lease.store.close()
    assert server.lease.ttl_ms == 700
    for too_short in ("0", "0.01"):  # a lease that lapses at any pause is refused, named
        with pytest.raises(
            ValueError, match=r"at least 0.1 s, not 0(.01)? s: set scheduler.lease_ttl"
        ):
            scheduler_of(mp, RDIST_SCHEDULER__LEASE_TTL=too_short)


@key_test("scheduler.allowed_failures")
def killed_worker_counts_the_configured_failures(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    server = scheduler_of(mp, RDIST_SCHEDULER__ALLOWED_FAILURES="1")
    assert server.state.allowed_failures == 1
    server._restore()  # a scheduler that leads again rebuilds its state: same setting
    assert server.state.allowed_failures == 1


@key_test("scheduler.work_stealing")
def no_steal_requests_when_stealing_is_off(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    from tests.test_scheduling_policy import LATER, W2, busy_and_idle, joined, steals

    server = scheduler_of(mp, RDIST_SCHEDULER__WORK_STEALING="false")
    busy_and_idle(server.state)
    assert steals(server.state.handle(joined(W2, t=LATER))) == []
    server = scheduler_of(mp, RDIST_SCHEDULER__WORK_STEALING="true")
    busy_and_idle(server.state)
    assert steals(server.state.handle(joined(W2, t=LATER))) != []


class RecordingPlugin(SchedulerPlugin):
    """A scheduler plugin that does nothing (the CLI only has to load it)."""


def run_scheduler_command(mp: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """``rdist scheduler`` as the CLI runs it, up to the server it builds (captured)."""
    import rdist.cli as cli
    import rdist.procs
    import rdist.scheduler.server as server_module

    seen: dict[str, Any] = {}

    class Stub:
        def run(self) -> None:
            pass

        def stop(self) -> None:
            pass

    def from_url(url: str, cluster: str, **kwargs: Any) -> Stub:
        seen.update(kwargs, url=url, cluster=cluster)
        return Stub()

    mp.setattr(server_module.SchedulerServer, "from_url", staticmethod(from_url))
    mp.setattr(cli, "_check_redis", lambda *a: None)
    mp.setattr(rdist.procs, "tune_gc", lambda: None)
    mp.setattr("signal.signal", lambda *a: None)
    mp.setattr(cli, "_setup_logging", lambda level: None)
    result = CliRunner().invoke(cli.main, ["scheduler", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen


@key_test("scheduler.plugins")
def scheduler_loads_the_configured_plugins(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    mp.setenv("RDIST_REDIS_URL", "redis://127.0.0.1:1")
    mp.setenv("RDIST_SCHEDULER__PLUGINS", "tests.test_config_keys:RecordingPlugin")
    seen = run_scheduler_command(mp)
    assert any(isinstance(p, RecordingPlugin) for _, p in seen["plugins"])


@key_test("scheduler.accept_client_plugins")
def scheduler_accepts_client_plugins_when_configured(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    yaml_file(mp, tmp, "redis:\n  url: redis://127.0.0.1:1\n  cluster: blue\n")
    assert run_scheduler_command(mp)["accept_client_plugins"] is False
    mp.setenv("RDIST_SCHEDULER__ACCEPT_CLIENT_PLUGINS", "yes")
    seen = run_scheduler_command(mp)
    assert seen["accept_client_plugins"] is True
    assert seen["cluster"] == "blue" and seen["url"] == "redis://127.0.0.1:1"
    assert seen["config"].get("scheduler.accept_client_plugins") is True


# -- amm --------------------------------------------------------------------------------------
@key_test("amm.start")
def the_memory_manager_runs_on_its_own_when_started(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert scheduler_of(mp).amm.due(time.time()) is False  # off by default
    server = scheduler_of(mp, RDIST_AMM__START="true")
    assert server.amm.started and server.amm.due(time.time())


@key_test("amm.interval")
def the_memory_manager_runs_every_interval(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    server = scheduler_of(mp, RDIST_AMM__START="1", RDIST_AMM__INTERVAL="30s")
    now = time.time()
    server.amm.last_run = now
    assert server.amm.interval == 30.0
    assert not server.amm.due(now + 29) and server.amm.due(now + 30)
    mp.delenv("RDIST_AMM__INTERVAL")
    import dask.config

    with dask.config.set({"distributed.scheduler.active-memory-manager.interval": "5s"}):
        assert scheduler_of(mp).amm.interval == 5.0  # dask's key, below ours


@key_test("amm.measure")
def the_memory_manager_judges_workers_by_the_measure(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    from rdist.scheduler import amm
    from rdist.scheduler.model import TS, Task, WorkerInfo

    a, b = "tcp://a:1", "tcp://b:1"
    workers = {w: WorkerInfo(w, w, 1, has_what={"x"}) for w in (a, b)}
    tasks = {"x": Task("x", "x", state=TS.MEMORY, who_has={a, b}, nbytes=10)}
    # by RSS, a is fuller; by managed bytes, b is
    beats = {a: amm.WorkerMemory(1000, 10, 0), b: amm.WorkerMemory(500, 400, 0)}
    for measure, dropped in (("process", a), ("managed", b)):
        runner = scheduler_of(mp, RDIST_AMM__MEASURE=measure).amm
        assert runner.measure == measure
        view = runner._view(_Scheduling(tasks, workers), beats)
        assert amm.suggest(view, [amm.ReduceReplicas()]).drop == {"x": [dropped]}


class _Scheduling:
    def __init__(self, tasks: Any, workers: Any) -> None:
        self.tasks, self.workers = tasks, workers


@key_test("amm.policies")
def the_memory_manager_runs_the_configured_policies(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    import dask.config

    from rdist.config import ConfigError

    assert scheduler_of(mp).amm.policy_names == ["ReduceReplicas"]
    assert scheduler_of(mp, RDIST_AMM__POLICIES="").amm._configured() == []
    mp.delenv("RDIST_AMM__POLICIES")
    dask_form = [{"class": "distributed.active_memory_manager.ReduceReplicas"}, {"class": "x.Y"}]
    with dask.config.set({"distributed.scheduler.active-memory-manager.policies": dask_form}):
        mp.setenv("DASK_CONFIG", str(tmp))
        with pytest.raises((ValueError, ConfigError), match="x.Y"):
            scheduler_of(mp)  # an unknown policy stops the scheduler at its start


# -- worker -----------------------------------------------------------------------------------
@key_test("worker.nthreads")
def worker_runs_the_configured_threads(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert worker_settings(mp, RDIST_WORKER__NTHREADS="4").nthreads == 4
    # (tests/test_cli_config.py: `RDIST_WORKER__NTHREADS=4 rdist worker` has 4 threads)


def started_worker(cluster: FakeCluster, settings: WorkerSettings) -> Any:
    return cluster.add_worker(
        nthreads=settings.nthreads,
        host=settings.host,
        port=settings.port,
        contact_host=settings.contact_host,
        memory_limit=settings.memory_limit,
        memory_fractions=settings.fractions,
        spill_directory=settings.spill_directory,
        resources={"GPU": 2.0} if settings.resources else None,
        heartbeat_interval=settings.heartbeat_interval,
    )


@key_test("worker.host")
def worker_binds_the_configured_interface(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    settings = worker_settings(mp, RDIST_WORKER__HOST="127.0.0.2")
    cluster = FakeCluster(n_workers=0)
    try:
        assert started_worker(cluster, settings).address.startswith("tcp://127.0.0.2:")
    finally:
        cluster.close()


@key_test("worker.port")
def worker_listens_on_the_configured_port(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    port = free_port()
    settings = worker_settings(mp, RDIST_WORKER__PORT=str(port))
    cluster = FakeCluster(n_workers=0)
    try:
        assert started_worker(cluster, settings).address == f"tcp://127.0.0.1:{port}"
    finally:
        cluster.close()


@key_test("worker.contact_host")
def worker_advertises_the_configured_host(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    settings = worker_settings(
        mp, RDIST_WORKER__HOST="0.0.0.0", RDIST_WORKER__CONTACT_HOST="127.0.0.3"
    )
    cluster = FakeCluster(n_workers=0)
    try:
        worker = started_worker(cluster, settings)
        assert worker.address.startswith("tcp://127.0.0.3:")  # what peers and clients use
    finally:
        cluster.close()


@key_test("worker.memory_limit")
def worker_holds_the_configured_limit(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    settings = worker_settings(mp, RDIST_WORKER__MEMORY_LIMIT="2GB")
    assert settings.memory_limit == 2 * 10**9
    cluster = FakeCluster(n_workers=0)
    try:
        worker = started_worker(cluster, settings)
        assert worker.monitor.limit == 2 * 10**9
        assert worker.data.target == int(0.6 * 2 * 10**9)  # spills past target * limit
    finally:
        cluster.close()


def fractions_test(name: str) -> Check:
    def check(mp: pytest.MonkeyPatch, tmp: Path) -> None:
        # the nested form, the flat one, and dask's key below both
        import dask.config

        fraction = name.rpartition("_")[2]
        with dask.config.set({f"distributed.worker.memory.{fraction}": 0.31}):
            assert getattr(MemoryFractions.from_env(), fraction) == 0.31
            with dask.config.set({f"distributed.worker.memory.{fraction}": False}):
                assert getattr(MemoryFractions.from_env(), fraction) == 0.0  # dask's "off"
            mp.setenv(f"RDIST_MEMORY_{fraction.upper()}", "0.42")  # ours beat dask's
            assert getattr(MemoryFractions.from_env(), fraction) == 0.42
        mp.setenv(f"RDIST_MEMORY_{fraction.upper()}", "0.42")
        assert getattr(MemoryFractions.from_env(), fraction) == 0.42
        mp.setenv(BY_NAME[name].env, "0.53")
        cluster = FakeCluster(n_workers=1)  # an in-process worker reads them too
        try:
            assert getattr(cluster.workers[0].monitor.fractions, fraction) == 0.53
        finally:
            cluster.close()
        assert getattr(worker_settings(mp).fractions, fraction) == 0.53

    return check


for _fraction in ("target", "spill", "pause", "terminate"):
    key_test(f"worker.memory_{_fraction}")(fractions_test(f"worker.memory_{_fraction}"))


@key_test("worker.spill_directory")
def worker_spills_where_configured(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    settings = worker_settings(mp, RDIST_WORKER__SPILL_DIRECTORY=str(tmp / "spill"))
    assert settings.spill_directory == str(tmp / "spill")
    cluster = FakeCluster(n_workers=0)
    try:
        worker = started_worker(cluster, settings)
        worker.data.set("x", b"abc", 3)
        assert worker.data.evict() == 3  # spilled, to a directory under the configured one
        assert worker.data.slow["x"].path.startswith(str(tmp / "spill"))
    finally:
        cluster.close()


@key_test("worker.resources")
def worker_declares_the_configured_resources(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    from rdist.cli import parse_resources

    settings = worker_settings(mp, RDIST_WORKER__RESOURCES="GPU=2")
    assert parse_resources(settings.resources) == {"GPU": 2.0}


@key_test("worker.nanny")
def worker_runs_without_nanny_when_configured(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert worker_settings(mp).nanny is True
    assert worker_settings(mp, RDIST_WORKER__NANNY="0").nanny is False


@key_test("worker.heartbeat_interval")
def worker_beats_at_the_configured_pace(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    mp.setenv("RDIST_WORKER__HEARTBEAT_INTERVAL", "50ms")
    cluster = FakeCluster(n_workers=1)
    try:
        worker = cluster.workers[0]
        assert worker.heartbeat_interval == 0.05
        store = connect(cluster.url, cluster.cluster_name)
        # four beats seen within 2.5 s: 0.2 s at the configured pace (room for a loaded
        # machine), 4 s at the default 1 s (one sleep of 0.5 s then one read raced a
        # starved heartbeat thread)
        seen = {store.workers.all()[worker.address].last_seen}
        deadline = time.monotonic() + 2.5
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
            seen.add(store.workers.all()[worker.address].last_seen)
        assert len(seen) >= 5, sorted(seen)
        store.close()
    finally:
        cluster.close()


# -- client -----------------------------------------------------------------------------------
@key_test("client.heartbeat_interval")
def client_beats_at_the_configured_pace(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    import dask.config

    cluster = FakeCluster(n_workers=1)
    try:
        with dask.config.set({"distributed.client.heartbeat": "2s"}):  # dask's, below ours
            with Client(cluster, set_as_default=False) as client:
                assert client._inbox._beat_every == 2.0
        mp.setenv("RDIST_CLIENT__HEARTBEAT_INTERVAL", "0.5")
        with Client(cluster, set_as_default=False) as client:
            assert client._inbox._beat_every == 0.5
    finally:
        cluster.close()
    # (test_client_lifetime: a client beating at 0.05 s is dropped once it stops)


# -- dashboard --------------------------------------------------------------------------------
def dashboard_app(mp: pytest.MonkeyPatch, **env: str) -> Any:
    from rdist.web.app import create_app

    for name, value in env.items():
        mp.setenv(name, value)
    mp.setenv("RDIST_REDIS__URL", fake_url())
    return create_app(load_config()).extensions["rdist"]


@key_test("dashboard.host")
def dashboard_binds_the_configured_host(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    from rdist.config import ConfigError
    from rdist.web.serve import DashboardServer

    mp.setenv("RDIST_REDIS__URL", fake_url())
    mp.setenv("RDIST_DASHBOARD__PORT", "0")
    mp.setenv("RDIST_DASHBOARD__HOST", "127.0.0.2")
    server = DashboardServer(load_config())
    try:
        assert server.host == "127.0.0.2"
    finally:
        server.server.server_close()
    mp.setenv("RDIST_DASHBOARD__HOST", "0.0.0.0")  # exposed, and no token: refused
    with pytest.raises(ConfigError):
        DashboardServer(load_config())


@key_test("dashboard.port")
def dashboard_listens_on_the_configured_port(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    from rdist.web.serve import DashboardServer

    port = free_port()
    mp.setenv("RDIST_REDIS__URL", fake_url())
    mp.setenv("PORT", "1")  # Heroku's, below ours
    mp.setenv("RDIST_DASHBOARD__PORT", str(port))
    server = DashboardServer(load_config())
    try:
        assert server.port == port
    finally:
        server.server.server_close()


@key_test("dashboard.token")
def dashboard_asks_for_the_configured_token(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    assert dashboard_app(mp, RDIST_DASHBOARD__TOKEN="s3cret").token == "s3cret"


@key_test("dashboard.interval")
def dashboard_refreshes_at_the_configured_pace(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    dashboard = dashboard_app(mp, RDIST_DASHBOARD__INTERVAL="3s")
    assert dashboard.interval == 3.0 and dashboard.feed.interval == 3.0


# -- logging ----------------------------------------------------------------------------------
@key_test("logging.length")
def log_buffers_keep_the_configured_number_of_lines(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    from rdist.logbuffer import ProcessLog

    yaml_file(mp, tmp, "logging:\n  length: 7\n")
    store = connect(f"fakeredis://{uuid.uuid4().hex}", "logs")
    try:
        log = ProcessLog(store, "worker", "tcp://w:1")
        assert log.buffer.length == 7
        log.close()
        mp.setenv("RDIST_LOGGING__LENGTH", "3")
        log = ProcessLog(store, "worker", "tcp://w:1")
        assert log.buffer.length == 3
        log.close()
    finally:
        store.close()


# -- tls --------------------------------------------------------------------------------------
def tls_test(name: str) -> Check:
    def check(mp: pytest.MonkeyPatch, tmp: Path) -> None:
        part = name.rpartition(".")[2]
        for which in ("yaml", "env"):  # Security checks the files exist (not their content)
            (tmp / which).mkdir()
            for p in ("cert", "key", "ca"):
                (tmp / which / f"{p}.pem").write_text("-")
        lines = "".join(f"  {p}: {tmp / 'yaml' / p}.pem\n" for p in ("cert", "key", "ca"))
        yaml_file(mp, tmp, "tls:\n" + lines)
        assert getattr(Security.from_config(), f"tls_{part}") == f"{tmp / 'yaml' / part}.pem"
        mp.setenv(BY_NAME[name].env, f"{tmp / 'env' / part}.pem")
        assert getattr(Security.from_config(), f"tls_{part}") == f"{tmp / 'env' / part}.pem"

    return check


for _part in ("cert", "key", "ca"):
    key_test(f"tls.{_part}")(tls_test(f"tls.{_part}"))


# -- the tests themselves ---------------------------------------------------------------------
def test_every_setting_has_a_test() -> None:
    assert sorted(KEY_TESTS) == sorted(s.name for s in SETTINGS)


@pytest.mark.parametrize("name", sorted(KEY_TESTS))
def test_setting_is_honoured(name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    KEY_TESTS[name](monkeypatch, tmp_path)


# -- flags over everything ----------------------------------------------------------------------
def run_worker_command(mp: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """``rdist worker`` as the CLI runs it, up to the worker it would start (captured)."""
    import rdist.cli as cli
    import rdist.worker.server as server_module

    seen: dict[str, Any] = {}

    def run_worker(url: str, cluster: str, **kwargs: Any) -> None:
        seen.update(kwargs, url=url, cluster=cluster)

    mp.setattr(server_module, "run_worker", run_worker)
    mp.setattr(cli, "_check_redis", lambda *a: None)
    mp.setattr(cli, "_setup_logging", lambda level: None)
    result = CliRunner().invoke(cli.main, ["worker", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen


def test_worker_flags_beat_the_environment_and_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    yaml_file(monkeypatch, tmp_path, "worker:\n  nthreads: 3\n  resources: GPU=1\n")
    monkeypatch.setenv("RDIST_WORKER__NTHREADS", "4")
    monkeypatch.setenv("RDIST_WORKER__NANNY", "false")
    seen = run_worker_command(monkeypatch, "redis://127.0.0.1:1/0", "--nthreads", "2")
    assert seen["nthreads"] == 2 and seen["url"] == "redis://127.0.0.1:1/0"
    assert seen["resources"] == {"GPU": 1.0}  # from the file: no flag, no variable
    seen = run_worker_command(monkeypatch, "--redis-url", "redis://127.0.0.1:1/0")
    assert seen["nthreads"] == 4


def test_the_url_is_given_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import rdist.cli as cli

    result = CliRunner().invoke(
        cli.main, ["worker", "redis://a:1", "--redis-url", "redis://b:1", "--no-nanny"]
    )
    assert result.exit_code == 2 and "give the Redis URL once" in result.output


def test_every_worker_flag_that_is_a_setting_maps_to_one() -> None:
    import rdist.cli as cli
    from rdist.cli_worker import WORKER_FLAGS

    not_settings = {"address", "redis_url", "log_level", "nanny_fd", "name"}
    not_settings |= {"listen_address", "contact_address"}
    params = {p.name for p in cli.main.commands["worker"].params} - not_settings
    assert params == set(WORKER_FLAGS)
    assert set(WORKER_FLAGS.values()) <= set(BY_NAME)
