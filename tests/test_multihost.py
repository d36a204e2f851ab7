"""Workers on separate (virtual) hosts: network namespaces joined by veth pairs.

Redis, the scheduler and the client stay on this host; two namespaces play two worker
hosts with their own addresses. A large result made on one host is consumed on the
other, so it crosses the virtual network peer to peer. Skips (with the reason) where
namespaces cannot be made, e.g. without root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rdist import Client
from rdist.embedded import find_redis_server
from tests import resilience_tasks as rt
from tests.proc_cluster import ROOT, _free_port

pytestmark = pytest.mark.real

HOSTS = {"a": ("10.231.1.1", "10.231.1.2"), "b": ("10.231.2.1", "10.231.2.2")}  #: gateway, host


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=20)


def _make_hosts(tag: str) -> list[str]:
    made = []
    for name, (gateway, address) in HOSTS.items():
        ns, veth = f"rd{tag}{name}", f"rv{tag}{name}"
        _sh("ip", "netns", "add", ns)
        made.append(ns)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _sh("ip", "link", "set", f"{veth}p", "netns", ns)
        _sh("ip", "addr", "add", f"{gateway}/24", "dev", veth)
        _sh("ip", "link", "set", veth, "up")
        for cmd in (
            ("ip", "addr", "add", f"{address}/24", "dev", f"{veth}p"),
            ("ip", "link", "set", f"{veth}p", "up"),
            ("ip", "link", "set", "lo", "up"),
            ("ip", "route", "add", "default", "via", gateway),
        ):
            _sh("ip", "netns", "exec", ns, *cmd)
    _sh("sysctl", "-qw", "net.ipv4.ip_forward=1")  # the two hosts reach each other through us
    return made


def _remove_hosts(tag: str) -> None:
    for name in HOSTS:
        subprocess.run(["ip", "link", "del", f"rv{tag}{name}"], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", f"rd{tag}{name}"], capture_output=True, timeout=20)


@pytest.fixture
def hosts() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (`ip`)")
    tag = uuid.uuid4().hex[:4]
    try:
        _make_hosts(tag)
    except (subprocess.CalledProcessError, OSError) as exc:
        _remove_hosts(tag)
        detail = (
            exc.stderr.decode()
            if isinstance(exc, subprocess.CalledProcessError) and exc.stderr
            else exc
        )
        pytest.skip(f"cannot create network namespaces here: {detail}")
    try:
        yield tag
    finally:
        _remove_hosts(tag)


def test_large_result_crosses_hosts_peer_to_peer(hosts: str) -> None:
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="rdist-multihost-")
    gateways = [gateway for gateway, _ in HOSTS.values()]
    redis = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            *gateways,
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cluster = f"multihost-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs: list[subprocess.Popen[bytes]] = [redis]
    try:
        time.sleep(0.3)
        local_url = f"redis://127.0.0.1:{port}/0"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "rdist",
                    "scheduler",
                    "--redis-url",
                    local_url,
                    "--cluster",
                    cluster,
                ],
                env=env,
            )
        )
        for name, (gateway, address) in HOSTS.items():
            procs.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        f"rd{hosts}{name}",
                        sys.executable,
                        "-m",
                        "rdist",
                        "worker",
                        "--redis-url",
                        f"redis://{gateway}:{port}/0",
                        "--cluster",
                        cluster,
                        "--host",
                        address,
                        "--name",
                        f"host-{name}",
                        "--no-nanny",
                    ],
                    env=env,
                )
            )
        with Client(local_url, cluster_name=cluster) as client:
            client.wait_for_workers(2, timeout=30)
            workers = {
                info["name"]: address
                for address, info in client.scheduler_info()["workers"].items()
            }
            assert workers["host-a"].startswith(f"tcp://{HOSTS['a'][1]}:")
            assert workers["host-b"].startswith(f"tcp://{HOSTS['b'][1]}:")
            marker = str(Path(workdir) / "runs")
            big = client.submit(rt.big_counted, marker, 2_000_000, workers=["host-a"])
            total = client.submit(len, big, workers=["host-b"])
            assert total.result(timeout=60) == 2_000_000
            deadline = time.monotonic() + 10  # host b reports its copy with its next batch
            while len(client.who_has([big])[big.key]) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert sorted(client.who_has([big])[big.key]) == sorted(workers.values())
            assert len(big.result(timeout=60)) == 2_000_000  # and from host a to the client
    finally:
        for proc in reversed(procs):  # workers and scheduler first, Redis last
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
