"""Faults on a real cluster: bad stream entries, hostile peers, unpicklable data, SIGTERM."""

from __future__ import annotations

import gc
import hashlib
import hmac
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from rdist import Client, LocalCluster, get_worker
from rdist.comm.tcp import (
    MAGIC,
    NONCE,
    Connection,
    local_name,
    local_sockets_enabled,
    parse_address,
)
from rdist.protocol import wire
from rdist.store import RedisStore, connect
from rdist.store.keys import PAYLOAD_FIELD
from tests.client_helpers import wait_until

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("subprocess_pythonpath")]


# -- helpers run in worker processes (importable by reference) ---------------------------


def inc(x: int) -> int:
    return x + 1


def where_am_i(_: Any = None) -> str:
    return get_worker().address


def blob_of(n: int) -> bytes:
    """Large enough (> 64 KiB) that the client fetches it from the worker's data server."""
    return bytes(range(256)) * (n // 256)


def make_lock() -> Any:
    return threading.Lock()


def make_big_unpicklable() -> Any:
    return [bytes(200_000), threading.Lock()]


def sleep_then_tag(i: int, delay: float) -> tuple[int, str]:
    time.sleep(delay)
    return i, get_worker().address


def takes_anything(*args: Any, **kwargs: Any) -> int:
    return len(args) + len(kwargs)


class CreatesFileWhenUnpickled:
    """Unpickling this calls ``open(path, "w")``: a file appearing means someone unpickled it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


# -- fixtures and tools ---------------------------------------------------------------------


@pytest.fixture
def store(cluster: LocalCluster) -> Iterator[RedisStore]:
    s = connect(cluster.redis_url, cluster.cluster_name)
    yield s
    s.close()


def deadletters(store: RedisStore) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in store.redis.xrange(store.keys.deadletter)]


def assert_cluster_works(client: Client) -> None:
    for address in sorted(client.scheduler_info()["workers"]):
        futures = client.map(where_am_i, range(3), workers=[address], pure=False)
        assert set(client.gather(futures)) == {address}
    assert client.gather(client.map(inc, range(100))) == list(range(1, 101))


def assert_disconnected(sock: socket.socket, timeout: float = 5.0) -> None:
    """The server closed the connection: reads end (EOF or reset) instead of answering."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return
    except ConnectionResetError:
        return
    except TimeoutError:
        pass
    raise AssertionError("the data server kept an unauthenticated connection open")


# -- malformed stream entries -------------------------------------------------------------


MALFORMED = [
    {PAYLOAD_FIELD: b"\xc1 definitely not msgpack"},
    {b"unexpected-field": b"no payload at all"},
    {PAYLOAD_FIELD: msgpack.packb([1, 2, 3])},
    {PAYLOAD_FIELD: wire.pack({"op": "no-such-op", "x": 1})},
]


def test_malformed_scheduler_entries_go_to_deadletter_and_cluster_keeps_working(
    client: Client, cluster: LocalCluster, store: RedisStore
) -> None:
    assert client.submit(inc, 1).result(timeout=20) == 2
    bad = MALFORMED + [
        {PAYLOAD_FIELD: wire.pack({"op": "task-done"})},  # known op, missing fields
        {PAYLOAD_FIELD: wire.pack({"op": "update-graph", "client": "x", "tasks": [["k"]]})},
    ]
    ids = [store.redis.xadd(store.keys.sched, fields) for fields in bad]

    wait_until(lambda: len(deadletters(store)) >= len(bad), 10, "dead-lettering")
    letters = deadletters(store)
    assert {f[b"id"] for f in letters} == set(ids)
    assert all(f[b"stream"] == store.keys.sched.encode() for f in letters)
    assert all(f[b"reason"] for f in letters)
    assert cluster._scheduler.poll() is None, "scheduler died on a malformed entry"
    assert_cluster_works(client)


def test_malformed_worker_entries_go_to_deadletter_and_worker_keeps_working(
    client: Client, cluster: LocalCluster, store: RedisStore
) -> None:
    address = sorted(client.scheduler_info()["workers"])[0]
    stream = store.keys.worker_stream(address)
    bad = MALFORMED + [
        {PAYLOAD_FIELD: wire.pack({"op": "batch"})},  # known op, missing its actions
        {PAYLOAD_FIELD: wire.pack({"op": "batch", "a": "not a list of actions"})},
        {PAYLOAD_FIELD: wire.pack({"op": "batch", "a": [["c"], ["zz", 1]]})},
        {PAYLOAD_FIELD: wire.pack({"op": "run", "client": "nobody"})},
    ]
    ids = [store.redis.xadd(stream, fields) for fields in bad]

    wait_until(lambda: len(deadletters(store)) >= len(bad), 10, "dead-lettering")
    letters = deadletters(store)
    assert {f[b"id"] for f in letters} == set(ids)
    assert all(f[b"stream"] == stream.encode() for f in letters)
    assert all(p.process.poll() is None for p in cluster.workers.values())
    assert_cluster_works(client)


# -- the data plane refuses strangers -----------------------------------------------------


def open_data_socket(address: str, via: str) -> socket.socket:
    """A raw connection to a worker's data server: its TCP port, or (Linux) the abstract
    unix socket that peers on the same host use."""
    if via == "tcp":
        return socket.create_connection(parse_address(address), timeout=5)
    if not local_sockets_enabled():
        pytest.skip("no local unix sockets on this platform")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(local_name(address))
    return sock


def wrong_secret_answer(hello: bytes) -> bytes:
    """A well-formed handshake answer, proven with a secret that is not the cluster's."""
    nonce = os.urandom(NONCE)
    return nonce + hmac.new(b"guessed", b"c" + hello[len(MAGIC) :] + nonce, hashlib.sha256).digest()


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_unauthenticated_peer_sending_garbage_or_pickles_is_disconnected_unheard(
    client: Client, tmp_path: Path, via: str
) -> None:
    address = sorted(client.scheduler_info()["workers"])[0]
    marker = tmp_path / "unpickled.txt"
    evil = pickle.dumps(CreatesFileWhenUnpickled(str(marker)), protocol=5)
    assert not marker.exists()
    item = ["evil", msgpack.packb([[len(evil)], [False]]), 1]
    header = msgpack.packb({"op": "put", "items": [item], "lengths": [len(evil)]})
    framed = struct.pack("<I", len(header)) + header + evil
    payloads = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(64),  # garbage
        evil * 4,  # a bare pickle, long enough to be read as a handshake answer
        framed,  # a well-framed "put" request that skips the handshake
        framed * 3,
        "wrong-secret",  # a real handshake with a guessed secret, then the "put"
    ]

    for payload in payloads:
        with open_data_socket(address, via) as sock:
            hello = sock.recv(len(MAGIC) + NONCE, socket.MSG_WAITALL)
            assert hello.startswith(MAGIC)
            if payload == "wrong-secret":
                payload = wrong_secret_answer(hello) + framed
            try:
                sock.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
            assert_disconnected(sock)

    time.sleep(0.3)
    assert not marker.exists(), "the worker unpickled data from an unauthenticated peer"
    assert "evil" not in client.has_what()[address]
    big = client.submit(blob_of, 200_000, workers=[address])  # served by the data server
    assert big.result(timeout=20) == blob_of(200_000)
    [scattered] = client.scatter([b"x" * 100_000], workers=[address])
    assert client.submit(len, scattered, workers=[address]).result(timeout=20) == 100_000


def test_peer_with_wrong_secret_fails_handshake(client: Client) -> None:
    address = sorted(client.scheduler_info()["workers"])[0]

    with pytest.raises(ConnectionError):
        Connection(address, b"wrong", timeout=5)

    secret = bytes.fromhex(client.store.redis.hget(client.store.keys.meta, "secret").decode())
    conn = Connection(address, secret, timeout=5)  # the right secret still gets in
    try:
        header, frames = conn.request({"op": "get", "keys": ["nothing-here"]})
        assert header["items"] == [] and frames == []
    finally:
        conn.close()


# -- serialization failures ---------------------------------------------------------------


def test_unpicklable_argument_fails_at_submit_naming_the_argument(client: Client) -> None:
    with pytest.raises(TypeError, match=r"argument 1 \(lock\)"):
        client.submit(takes_anything, 1, threading.Lock())
    with pytest.raises(TypeError, match="keyword argument 'guard'"):
        client.submit(takes_anything, 1, guard=threading.Lock())
    with pytest.raises(TypeError, match=r"argument 0 \(lock\)"):
        client.map(takes_anything, [threading.Lock()])

    assert client.submit(takes_anything, 1, 2, x=3).result(timeout=20) == 3


def test_unpicklable_result_errs_only_that_future(client: Client) -> None:
    small = client.submit(make_lock)
    big = client.submit(make_big_unpicklable)
    others = client.map(inc, range(20))

    with pytest.raises(TypeError, match="cannot be serialized"):
        small.result(timeout=20)
    assert small.status == "error"
    assert client.gather(others) == list(range(1, 21))
    with pytest.raises(TypeError, match="cannot be serialized"):
        big.result(timeout=20)  # too large for Redis: kept in memory, yet still checked
    assert big.status == "error"
    assert client.submit(inc, 41).result(timeout=20) == 42


# -- SIGTERM --------------------------------------------------------------------------------


def test_sigterm_worker_leaves_cleanly_and_its_tasks_finish_elsewhere(
    client: Client, cluster: LocalCluster
) -> None:
    by_name = cluster.worker_addresses()
    victim_name, victim = sorted((n, a) for n, a in by_name.items() if n in cluster.workers)[0]
    survivor = next(a for n, a in by_name.items() if a != victim)
    process = cluster.workers[victim_name].process
    tagged = client.map(sleep_then_tag, range(8), delay=0.5, pure=False)

    def victim_busy() -> bool:
        executing = client.scheduler_info()["workers"][victim]["executing"]
        return executing > 0 or any(f.done() for f in tagged)

    wait_until(victim_busy, 10, "victim busy")

    process.send_signal(signal.SIGTERM)

    assert process.wait(timeout=10) == 0
    wait_until(lambda: victim not in client.scheduler_info()["workers"], 20, "victim removed")
    results = client.gather(tagged)
    assert [i for i, _ in results] == list(range(8))
    assert {w for _, w in results} <= {victim, survivor}
    assert survivor in {w for _, w in results}
    late = client.map(where_am_i, range(4), pure=False)
    assert set(client.gather(late)) == {survivor}
    tagged.clear()  # (the closure above still names the list: clear it, do not del it)
    del late
    gc.collect()
