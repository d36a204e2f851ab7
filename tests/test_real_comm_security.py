"""The data plane's defences on real worker processes (issue 11): a worker out of file
descriptors keeps beating and serving, and a TLS cluster moves data only between
holders of the cluster CA's certificates (set by environment or by worker flags)."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rdist import Client, LocalCluster, get_worker, wait
from rdist.comm.core import AuthenticationError
from rdist.comm.security import Security
from rdist.comm.tcp import Connection
from rdist.protocol import wire
from tests.client_helpers import wait_until
from tests.test_real_dataplane import WorkerCLI
from tests.tls_certs import Authorities, make_authorities

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]

MB = 1_000_000


# -- run in worker processes -------------------------------------------------------------------


def make_array(nbytes: int, fill: float) -> Any:
    import numpy as np

    return np.full(nbytes // 8, fill)


def summary(a: Any) -> tuple[float, str]:
    return float(a.sum()), get_worker().address


def exhaust_descriptors(seconds: float, started: str) -> int:
    """Take every free file descriptor of this worker process for ``seconds``."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    Path(started).write_text("exhausting")  # now: afterwards there is nothing to write with
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    try:
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        time.sleep(seconds)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return len(held)


# -- tools -------------------------------------------------------------------------------------


@pytest.fixture
def cluster_name() -> str:
    return f"sec-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def scheduler(redis_url: str, cluster_name: str) -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=0,
        redis_url=redis_url,
        name=cluster_name,
        timeout=30,
        nanny=False,
        dashboard_address=None,
    ) as lc:
        yield lc


def last_seen(c: Client, address: str) -> float:
    raw = c.store.redis.hget(c.store.keys.workers, address)
    return float(wire.unpack(raw, "test")["last_seen"]) if raw else 0.0


def secret_of(c: Client) -> bytes:
    return bytes.fromhex(c.store.redis.hget(c.store.keys.meta, "secret").decode())


# -- out of descriptors ------------------------------------------------------------------------


@pytest.mark.parametrize("unix", ["1", "0"])
def test_a_worker_out_of_descriptors_keeps_beating_and_serves_once_it_has_some(
    redis_url: str,
    cluster_name: str,
    scheduler: LocalCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    unix: str,
) -> None:
    monkeypatch.setenv("RDIST_TRANSFER", "p2p")  # straight to the worker: no Redis detour
    monkeypatch.setenv("RDIST_UNIX_SOCKETS", unix)
    worker = WorkerCLI(redis_url, cluster_name, "--no-nanny", "--nthreads", "1")
    try:
        with Client(scheduler, timeout=30) as c:
            c.wait_for_workers(1, timeout=20)
            [address] = c.scheduler_info()["workers"]
            big = c.submit(make_array, 5 * MB, 3.0, pure=False)
            wait([big], timeout=20)  # held on the worker; nobody connected to it yet
            started = tmp_path / "exhausting"
            hog = c.submit(exhaust_descriptors, 6.0, str(started), pure=False)
            wait_until(started.exists, 20, "descriptors taken")
            time.sleep(0.5)

            fetched: dict[str, Any] = {}

            def fetch_big() -> None:
                try:
                    fetched["a"] = big.result(timeout=40)
                except BaseException as exc:  # reported by the assertions below
                    fetched["error"] = exc

            fetch = threading.Thread(target=fetch_big)
            fetch.start()  # accepted, or waiting in the backlog while accept() fails
            before = last_seen(c, address)
            time.sleep(3.0)
            assert last_seen(c, address) - before >= 1.5, "heartbeats stopped without descriptors"
            assert not hog.done()

            assert hog.result(timeout=20) > 0  # descriptors given back
            fetch.join(40)
            assert "error" not in fetched, fetched
            assert float(fetched["a"].sum()) == 5 * MB / 8 * 3.0
            with Client(scheduler, timeout=30) as fresh:  # a new connection: accept() lived on
                again = fresh.gather([fresh.submit(summary, big, pure=False)], errors="raise")
                assert again[0][0] == 5 * MB / 8 * 3.0
                assert float(big.result(timeout=30).sum()) == 5 * MB / 8 * 3.0
                copy = fresh.submit(make_array, 2 * MB, 1.0, pure=False)
                assert float(copy.result(timeout=30).sum()) == 2 * MB / 8  # fetched by `fresh`
            assert worker.proc.poll() is None and address in c.scheduler_info()["workers"]
    finally:
        worker.close()


# -- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> Authorities:
    return make_authorities(tmp_path_factory.mktemp("tls"))


def use_certificate(monkeypatch: pytest.MonkeyPatch, member: Any) -> None:
    for name, value in member.env().items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("unix", ["0", "1"])
def test_a_tls_cluster_moves_data_only_between_certificate_holders(
    redis_url: str,
    cluster_name: str,
    authorities: Authorities,
    monkeypatch: pytest.MonkeyPatch,
    unix: str,
) -> None:
    use_certificate(monkeypatch, authorities.worker)  # inherited by every worker process
    monkeypatch.setenv("RDIST_TRANSFER", "p2p")
    monkeypatch.setenv("RDIST_UNIX_SOCKETS", unix)
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            redis_url=redis_url,
            name=cluster_name,
            timeout=30,
            nanny=False,
            dashboard_address=None,
        ) as lc,
        Client(lc, timeout=30) as c,
    ):
        w0, w1 = sorted(c.scheduler_info()["workers"])
        assert w0.startswith("tls://") and w1.startswith("tls://")
        a = c.submit(make_array, 20 * MB, 2.0, workers=[w0])
        assert c.submit(summary, a, workers=[w1]).result(timeout=30) == (20 * MB / 8 * 2.0, w1)
        assert float(a.result(timeout=30).sum()) == 20 * MB / 8 * 2.0  # to this client too
        [s] = c.scatter([make_array(3 * MB, 1.0)], workers=[w1])
        assert c.submit(summary, s, workers=[w0]).result(timeout=30)[0] == 3 * MB / 8

        secret = secret_of(c)
        with pytest.raises(AuthenticationError, match="RDIST_TLS_CERT"):
            Connection(w0, secret, timeout=5)  # no certificate: told what to set
        if unix == "0":
            impostor = Security(
                authorities.stranger.cert, authorities.stranger.key, authorities.client.ca
            )
            with pytest.raises((ssl.SSLError, ConnectionError)):
                Connection(w0, secret, timeout=5, security=impostor)  # another CA's
        member = Connection(w0, secret, timeout=5, security=Security(**tls_kwargs(authorities)))
        member.close()


def tls_kwargs(authorities: Authorities) -> dict[str, str]:
    client = authorities.client
    return {"tls_cert": client.cert, "tls_key": client.key, "tls_ca": client.ca}


def test_tls_flags_reach_a_worker_under_its_nanny(
    redis_url: str,
    cluster_name: str,
    scheduler: LocalCluster,
    authorities: Authorities,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RDIST_TRANSFER", "p2p")
    monkeypatch.setenv("RDIST_UNIX_SOCKETS", "0")
    files = authorities.worker
    nanny = WorkerCLI(
        redis_url,
        cluster_name,
        "--tls-cert",
        files.cert,
        "--tls-key",
        files.key,
        "--tls-ca",
        files.ca,
    )
    try:
        use_certificate(monkeypatch, authorities.client)  # this client: by environment
        with Client(scheduler, timeout=30) as c:
            c.wait_for_workers(1, timeout=20)
            [address] = c.scheduler_info()["workers"]
            assert address.startswith("tls://")
            big = c.submit(make_array, 4 * MB, 1.5, pure=False)
            assert float(big.result(timeout=30).sum()) == 4 * MB / 8 * 1.5
    finally:
        nanny.close()


@pytest.mark.cli
def test_a_worker_with_unusable_tls_files_exits_at_once_saying_which(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rdist",
            "worker",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--tls-cert",
            str(missing),
            "--tls-ca",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    assert done.returncode == 2
    assert "--tls-cert" in done.stderr and "not a file" in done.stderr
