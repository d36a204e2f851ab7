"""The CLI roles fail fast, exit non-zero with a message a person can act on, and keep the
Redis password out of argv and output (issue 11, items 4 and 5)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import psutil
import pytest
import redis

from rdist.embedded import EmbeddedRedis
from rdist.store.health import EXIT_CONFIG
from rdist.worker.nanny import Nanny
from tests.conftest import free_port
from tests.test_cli import Processes, clean_env, procs, rdist_script  # noqa: F401

pytestmark = [pytest.mark.cli, pytest.mark.usefixtures("subprocess_pythonpath")]

SECRET = "s3cret-" + uuid.uuid4().hex[:8]


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [rdist_script(), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def password_redis() -> Iterator[str]:
    """A real redis-server that asks for a password; yields its URL with that password."""
    server = EmbeddedRedis(port=free_port()).start()
    redis.Redis.from_url(server.url).config_set("requirepass", SECRET)
    try:
        yield f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


@pytest.mark.parametrize("role", ["scheduler", "worker", "dashboard"])
def test_a_role_with_redis_unreachable_exits_1_within_its_timeout(role: str) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:1/0"
    started = time.monotonic()

    done = run_cli(role, "--redis-url", url, "--timeout", "1", env=clean_env())

    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 20  # the interpreter's start-up, then 1 s
    assert "did not answer within 1 s" in done.stderr and "redis://***@127.0.0.1:1/0" in done.stderr
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize("role", ["scheduler", "worker"])
def test_a_role_with_a_url_that_cannot_work_exits_78_at_once(role: str) -> None:
    done = run_cli(
        role,
        "--redis-url",
        f"http://:{SECRET}@127.0.0.1:6379/0",
        "--timeout",
        "60",
        env=clean_env(),
    )

    assert done.returncode == EXIT_CONFIG, done.stderr
    assert "unknown scheme 'http'" in done.stderr and SECRET not in done.stderr


def test_a_wrong_password_exits_78_naming_the_fix(password_redis: str) -> None:
    wrong = password_redis.replace(SECRET, "wrong-password")

    done = run_cli("scheduler", "--redis-url", wrong, "--timeout", "30", env=clean_env())

    assert done.returncode == EXIT_CONFIG, done.stderr
    assert "refused the credentials" in done.stderr and "password in the URL" in done.stderr
    assert "wrong-password" not in done.stderr


def test_the_nanny_does_not_restart_a_worker_that_failed_for_its_configuration(
    password_redis: str,
) -> None:
    wrong = password_redis.replace(SECRET, "wrong-password")
    nanny = Nanny(wrong, "nanny-config", ["worker", "--cluster", "nanny-config", "--timeout", "5"])
    started = time.monotonic()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = nanny.run()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)

    assert status == EXIT_CONFIG and nanny.restarts == 0
    assert time.monotonic() - started < 30


def test_no_process_of_a_nannied_worker_has_the_password_in_its_argv(
    password_redis: str,
    procs: Processes,  # noqa: F811
) -> None:
    cluster = f"argv-{uuid.uuid4().hex[:8]}"
    env = clean_env(RDIST_REDIS_URL=password_redis, RDIST_CLUSTER=cluster)
    scheduler = procs.start("scheduler", env=env)
    worker = procs.start("worker", "--nanny", "--nthreads", "1", env=env)
    try:
        from rdist import Client

        with Client(password_redis, cluster_name=cluster, timeout=30) as client:
            client.wait_for_workers(1, timeout=30)
            assert "***" in repr(client) and SECRET not in repr(client)
            assert SECRET not in str(client.scheduler_info())
            everyone = [psutil.Process(p.pid) for p in (scheduler, worker)]
            everyone += [child for p in list(everyone) for child in p.children(recursive=True)]
            assert len(everyone) >= 3  # scheduler, nanny, its worker
            for proc in everyone:
                assert SECRET not in " ".join(proc.cmdline()), proc.cmdline()
    finally:
        if scheduler.poll() is not None or worker.poll() is not None:
            print(procs.logs(), file=sys.stderr)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://user:{SECRET}@host:6379/0",
        f"redis://:{SECRET}@host:6379/0",
        f"redis://host:6379/0?password={SECRET}",
        f"rediss://host:6380/0?ssl_ca_certs=/ca.pem&sentinel_password={SECRET}",
    ],
)
def test_rdist_config_masks_every_secret_form(url: str) -> None:
    done = run_cli("config", env=clean_env(RDIST_REDIS_URL=url))

    assert done.returncode == 0, done.stderr
    assert "***" in done.stdout and SECRET not in done.stdout
