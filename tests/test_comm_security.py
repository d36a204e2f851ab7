"""The data plane against hostile peers (issue 11): relays that forward the handshake and
then tamper, sockets squatted by another user, slow handshakes, connection floods,
descriptor exhaustion, and TLS with mutual verification."""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rdist.comm import handshake, listener
from rdist.comm.core import AuthenticationError, connect
from rdist.comm.handshake import (
    DIGEST,
    GREETING,
    NONCE,
    Deadline,
    PeerBusy,
    SessionKeys,
    client_handshake,
    read_greeting,
)
from rdist.comm.listener import TCPListener
from rdist.comm.local import local_name, local_sockets_enabled
from rdist.comm.pool import ConnectionPool
from rdist.comm.security import Security
from rdist.comm.tcp import TCPComm, parse_address
from rdist.comm.transfer import DataServer, Gatherer, encode_items, split_items
from rdist.config import ConfigError
from rdist.protocol import serialize
from tests.client_helpers import wait_until
from tests.tls_certs import Authorities, make_authorities

SECRET = b"k" * 32
NOBODY = 65534


class CreatesFile:
    """Unpickling it creates a file: the proof that a pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


class Holder:
    """A data server over a dict, on a real TCP (or TLS) listener."""

    def __init__(self, values: dict[str, Any] | None = None, **listener_kwargs: Any) -> None:
        self.values: dict[str, Any] = dict(values or {})
        self.puts = 0
        self.release = threading.Event()
        self.release.set()
        self.server = DataServer(self.frames_of, lambda keys: 10**9, self.put, max_outgoing=100)
        scheme = listener_kwargs.pop("scheme", "tcp")
        self.listener = TCPListener(
            "127.0.0.1", 0, SECRET, self.server.handle, scheme=scheme, **listener_kwargs
        )
        self.listener.start()
        self.address = self.listener.address

    def frames_of(self, keys: list[str]) -> dict[str, list[Any]]:
        self.release.wait(10)
        return {k: serialize.dumps(self.values[k]) for k in keys if k in self.values}

    def put(self, items: dict[str, list[Any]]) -> None:
        self.puts += 1
        self.values.update({k: serialize.loads(f) for k, f in items.items()})


@pytest.fixture
def holder() -> Iterator[Holder]:
    h = Holder({"a": np.arange(1_000_000, dtype="f8"), "b": b"small"})
    yield h
    h.listener.close()


def get(comm: Any, *keys: str) -> dict[str, Any]:
    header, frames = comm.request({"op": "get", "keys": list(keys)})
    return {k: serialize.loads(f) for k, f in split_items(header, frames).items()}


def forged(header: dict[str, Any], frames: list[Any]) -> bytes:
    """A message as our framing writes it, under keys the forger had to guess."""
    a, b = socket.socketpair()
    guess = SessionKeys(os.urandom(32), os.urandom(32))
    TCPComm(a, "forger", guess).send(header, frames)
    a.close()
    out = bytearray()
    while chunk := b.recv(1 << 20):
        out += chunk
    b.close()
    return bytes(out)


def evil_put(marker: Path) -> bytes:
    header, frames = encode_items({"evil": CreatesFile(str(marker))})
    return forged({**header, "op": "put"}, frames)


def evil_reply(marker: Path) -> bytes:
    header, frames = encode_items({"a": CreatesFile(str(marker))})
    return forged({**header, "status": "OK", "missing": []}, frames)


# -- a man in the middle ----------------------------------------------------------------------


Tamper = Callable[[bytes, int], bytes]


class Relay:
    """A TCP proxy in front of a data server: it forwards the handshake verbatim (it cannot
    answer the challenge itself), then passes each direction through a tamper function
    ``(bytes, offset since the handshake) -> bytes to forward``."""

    def __init__(
        self, target: str, to_server: Tamper | None = None, to_client: Tamper | None = None
    ) -> None:
        self.target = parse_address(target)
        self.to_server = to_server or (lambda data, _: data)
        self.to_client = to_client or (lambda data, _: data)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server_closed = threading.Event()
        self.handshakes = 0
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.socks += [client, server]
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        deadline = Deadline(10)
        try:
            hello = handshake.recv_exact(server, GREETING + NONCE, deadline)
            client.sendall(hello)
            server.sendall(handshake.recv_exact(client, NONCE + DIGEST, deadline))
            client.sendall(handshake.recv_exact(server, DIGEST, deadline))
        except (OSError, ConnectionError):
            client.close()
            server.close()
            return
        self.handshakes += 1
        for sock in (client, server):
            sock.settimeout(None)
        threading.Thread(
            target=self._pump, args=(client, server, self.to_server, None), daemon=True
        ).start()
        self._pump(server, client, self.to_client, self.server_closed)

    @staticmethod
    def _pump(
        src: socket.socket, dst: socket.socket, tamper: Tamper, eof: threading.Event | None
    ) -> None:
        offset = 0
        try:
            while data := src.recv(1 << 16):
                dst.sendall(tamper(data, offset))
                offset += len(data)
        except OSError:
            pass
        if eof is not None:
            eof.set()
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for sock in self.socks:
            sock.close()


def test_a_relay_passes_the_handshake_and_honest_traffic_unchanged(holder: Holder) -> None:
    relay = Relay(holder.address)
    comm = connect(relay.address, SECRET)
    try:
        got = get(comm, "a", "b")
        np.testing.assert_array_equal(got["a"], holder.values["a"])
        assert comm.authenticated_messages  # type: ignore[attr-defined]
    finally:
        comm.close()
        relay.close()


def test_a_pickle_injected_after_a_relayed_handshake_is_never_loaded(
    holder: Holder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "unpickled"
    injection = evil_put(marker)
    relay = Relay(holder.address, to_server=lambda data, offset: injection if offset == 0 else b"")
    comm = connect(relay.address, SECRET)  # the handshake went through the relay
    with caplog.at_level(logging.WARNING, logger="rdist.comm"):
        with pytest.raises(ConnectionError):
            get(comm, "b")  # replaced by the relay with its "put"
        assert relay.server_closed.wait(5), "the server kept the tampered connection open"
    comm.close()
    relay.close()
    assert not marker.exists() and holder.puts == 0 and "evil" not in holder.values
    assert "forged or altered" in caplog.text


def test_a_reply_replaced_by_a_relay_is_refused_by_the_client(
    holder: Holder, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    replacement = evil_reply(marker)
    relay = Relay(holder.address, to_client=lambda data, offset: replacement if not offset else b"")
    comm = connect(relay.address, SECRET)
    with pytest.raises(AuthenticationError, match="integrity check"):
        comm.request({"op": "get", "keys": ["b"]})
    assert comm.closed
    relay.close()
    assert not marker.exists()


def test_one_flipped_byte_in_a_large_frame_fails_the_message(holder: Holder) -> None:
    def flip(data: bytes, offset: int) -> bytes:
        at = 4_000_000 - offset  # inside the 8 MB array
        if 0 <= at < len(data):
            data = data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
        return data

    relay = Relay(holder.address, to_client=flip)
    comm = connect(relay.address, SECRET)
    with pytest.raises(AuthenticationError, match=r"integrity check \(frames\)"):
        comm.request({"op": "get", "keys": ["a"]})
    relay.close()


def test_a_replayed_message_is_refused(holder: Holder) -> None:
    recorded: list[bytes] = []

    def record_then_replay(data: bytes, offset: int) -> bytes:
        if not recorded:
            recorded.append(data)
            return data
        return recorded[0]  # every later request is replaced by the first, a valid "put"

    relay = Relay(holder.address, to_server=record_then_replay)
    comm = connect(relay.address, SECRET)
    header, frames = encode_items({"k": 1})
    assert comm.request({**header, "op": "put"}, frames)[0]["ok"] is True
    with pytest.raises(ConnectionError):
        comm.request({"op": "get", "keys": ["k"]})
    assert relay.server_closed.wait(5)
    assert holder.puts == 1
    comm.close()
    relay.close()


# -- local unix sockets: same user only ------------------------------------------------------


SQUATTER = r"""
import socket, sys, threading
name, host, port = bytes.fromhex(sys.argv[1]).decode(), sys.argv[2], int(sys.argv[3])
seen = []  # bytes the victim sent us
def pump(src, dst, count):
    try:
        while data := src.recv(65536):
            seen.append(len(data) if count else 0); dst.sendall(data)
    except OSError:
        pass
lst = socket.socket(socket.AF_UNIX); lst.bind(name); lst.listen(8)
print("ready", flush=True)
lst.settimeout(float(sys.argv[4]))
try:
    while True:
        c, _ = lst.accept()
        s = socket.create_connection((host, port))
        threading.Thread(target=pump, args=(c, s, True), daemon=True).start()
        threading.Thread(target=pump, args=(s, c, False), daemon=True).start()
except OSError:
    pass
print("relayed", sum(seen), flush=True)
"""

STRANGER = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5)
s.connect(bytes.fromhex(sys.argv[1]).decode())
try:
    print(repr(s.recv(100)), flush=True)
except OSError as exc:
    print("error", exc, flush=True)
"""


def as_nobody(script: str, *args: str) -> subprocess.Popen[str]:
    """``script`` run by another user (a Python that user may execute: ours may be in a
    home directory closed to others)."""
    if os.getuid() != 0:
        pytest.skip("needs root, to run a process as another user")
    if not local_sockets_enabled():
        pytest.skip("abstract unix sockets are Linux only")
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    try:
        return subprocess.Popen(
            [python, "-c", script, *args],
            user=NOBODY,
            cwd="/",
            stdout=subprocess.PIPE,
            text=True,
        )
    except PermissionError:
        pytest.skip(f"user {NOBODY} may not run {python}")


@pytest.mark.real
def test_a_local_socket_squatted_by_another_user_is_refused_for_tcp(
    holder: Holder, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = parse_address(holder.address)
    name = local_name(holder.address).encode().hex()
    squatter = as_nobody(SQUATTER, name, host, str(port), "3")
    assert squatter.stdout is not None and squatter.stdout.readline().strip() == "ready"
    holder.listener.add_local_alias(holder.address)  # the name is taken: TCP only
    with caplog.at_level(logging.WARNING, logger="rdist.comm"):
        comm = connect(holder.address, SECRET)
    try:
        assert comm.sock.family == socket.AF_INET  # type: ignore[attr-defined]
        assert get(comm, "b") == {"b": b"small"}
    finally:
        comm.close()
    out, _ = squatter.communicate(timeout=10)
    assert out.strip() == "relayed 0"  # not one byte of ours went through it
    assert "held by another user" in caplog.text


@pytest.mark.real
def test_the_local_socket_closes_on_another_user_before_a_byte(holder: Holder) -> None:
    holder.listener.add_local_alias(holder.address)
    stranger = as_nobody(STRANGER, local_name(holder.address).encode().hex())
    out, _ = stranger.communicate(timeout=10)
    assert out.strip() == "b''"  # no greeting, no nonce
    comm = connect(holder.address, SECRET)  # we (the same user) still get in, locally
    assert comm.sock.family == socket.AF_UNIX  # type: ignore[attr-defined]
    assert not comm.authenticated_messages  # type: ignore[attr-defined]
    comm.close()


# -- handshake deadline, connection cap, accept loop ------------------------------------------


def test_a_handshake_trickled_byte_by_byte_is_cut_at_its_total_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener, "HANDSHAKE_SECONDS", 1.0)
    h = Holder()
    try:
        with socket.create_connection(parse_address(h.address), timeout=5) as sock:
            sock.recv(GREETING + NONCE, socket.MSG_WAITALL)
            started, sent = time.monotonic(), 0
            while sent < NONCE + DIGEST - 1 and not closed_by_peer(sock):
                try:
                    sock.sendall(b"x")  # each byte well within any per-recv timeout
                except OSError:
                    break
                sent += 1
                time.sleep(0.2)
            elapsed = time.monotonic() - started
    finally:
        h.listener.close()
    # cut near its 1 s deadline; without one the trickle would last (NONCE + DIGEST) * 0.2 s,
    # about 12.6 s: 5 s leaves room for a loaded machine and still tells the two apart
    assert sent < NONCE + DIGEST - 1 and elapsed < 5.0


def closed_by_peer(sock: socket.socket) -> bool:
    """The peer closed (or reset) the connection: readable, with nothing to read."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def test_strangers_in_their_handshake_cannot_take_every_slot() -> None:
    h = Holder({"b": b"small"}, max_connections=4, max_handshakes=1)
    stranger = socket.create_connection(parse_address(h.address))
    try:
        stranger.recv(GREETING, socket.MSG_WAITALL)  # admitted: holds the handshake slot
        with pytest.raises(PeerBusy):
            connect(h.address, SECRET)
        assert h.listener.refused == 1
        stranger.close()
        wait_until(lambda: h.listener.connections == 0, 5, "the stranger's slot freed")
        comm = connect(h.address, SECRET)
        assert get(comm, "b") == {"b": b"small"}
        comm.close()
    finally:
        h.listener.close()


def test_at_the_cap_the_longest_idle_connection_makes_room(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listener, "EVICT_IDLE_SECONDS", 0.05)
    h = Holder({"b": b"small"}, max_connections=2)
    try:
        older, newer = connect(h.address, SECRET), connect(h.address, SECRET)
        get(older, "b")
        time.sleep(0.05)
        get(newer, "b")
        time.sleep(0.1)  # both idle now, the older one longer
        third = connect(h.address, SECRET)  # full: the older idle one is closed for it
        assert get(third, "b") == {"b": b"small"}
        assert h.listener.evicted == 1 and h.listener.connections == 2
        with pytest.raises(ConnectionError):
            get(older, "b")  # (a pool would reconnect: it retries a reused comm once)
        assert get(newer, "b") == {"b": b"small"}
        for comm in (older, newer, third):
            comm.close()
    finally:
        h.listener.close()


def test_a_peer_at_its_cap_counts_as_busy_not_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener, "EVICT_IDLE_SECONDS", 0.2)
    h = Holder({"b": b"small"}, max_connections=1)
    h.release.clear()  # the one connection is busy serving
    first = connect(h.address, SECRET)
    ask = threading.Thread(target=lambda: first.request({"op": "get", "keys": ["b"]}))
    ask.start()
    relay = RecordingRelay()
    pool = ConnectionPool(SECRET)
    gatherer = Gatherer(pool, "auto", relay)
    try:
        threading.Timer(0.5, h.release.set).start()
        found, missing = gatherer.fetch(["b"], {"b": [h.address]})
        assert missing == [] and serialize.loads(found["b"]) == b"small"
        assert gatherer.busy_answers >= 1 and h.listener.refused >= 1
        assert relay.asked == [] and not gatherer.unreachable  # never fell back to Redis
    finally:
        ask.join(5)
        first.close()
        pool.close()
        h.listener.close()


class RecordingRelay:
    def __init__(self) -> None:
        self.asked: list[str] = []

    def fetch(self, peer: str, keys: list[str]) -> dict[str, list[Any]]:
        self.asked.append(peer)
        return {}


class ExhaustedSocket:
    """A listening socket of a process out of descriptors, then of one that has some."""

    def __init__(self, errors: list[int], then: socket.socket, closing: threading.Event) -> None:
        self.errors = list(errors)
        self.then: socket.socket | None = then
        self.closing = closing

    def accept(self) -> tuple[socket.socket, Any]:
        if self.errors:
            raise OSError(self.errors.pop(0), os.strerror(errno.EMFILE))
        if self.then is not None:
            sock, self.then = self.then, None
            return sock, "peer"
        self.closing.wait(10)
        raise OSError(errno.EBADF, "closed")


def test_the_accept_loop_outlives_descriptor_exhaustion(caplog: pytest.LogCaptureFixture) -> None:
    h = Holder({"b": b"small"})
    ours, theirs = socket.socketpair()
    exhausted = ExhaustedSocket(
        [errno.EMFILE, errno.EMFILE, errno.ENFILE, errno.ECONNABORTED, errno.EMFILE],
        ours,
        h.listener._closing,
    )
    with caplog.at_level(logging.WARNING, logger="rdist.comm"):
        loop = threading.Thread(target=h.listener._accept_loop, args=(exhausted,), daemon=True)
        loop.start()
        deadline = Deadline(10)
        read_greeting(theirs, deadline)
        client_handshake(theirs, SECRET, deadline)  # served once descriptors came back
        theirs.settimeout(None)
        comm = TCPComm(theirs, "socketpair")  # same-user unix socket: no message tags
        assert get(comm, "b") == {"b": b"small"}
        assert loop.is_alive()
        comm.close()
        h.listener.close()
        loop.join(5)
    assert not loop.is_alive()
    assert "cannot accept" in caplog.text


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def authorities(tmp_path_factory: pytest.TempPathFactory) -> Authorities:
    return make_authorities(tmp_path_factory.mktemp("tls"))


def security(member: Any) -> Security:
    return Security(member.cert, member.key, member.ca)


@pytest.fixture
def tls_holder(authorities: Authorities) -> Iterator[Holder]:
    h = Holder(
        {"a": np.arange(1_000_000, dtype="f8"), "b": b"small"},
        scheme="tls",
        security=security(authorities.worker),
    )
    yield h
    h.listener.close()


def test_tls_peers_with_certificates_of_the_cluster_ca_move_data(
    tls_holder: Holder, authorities: Authorities
) -> None:
    assert tls_holder.address.startswith("tls://127.0.0.1:")
    comm = connect(tls_holder.address, SECRET, security=security(authorities.client))
    try:
        assert isinstance(comm.sock, ssl.SSLSocket)  # type: ignore[attr-defined]
        assert not comm.authenticated_messages  # type: ignore[attr-defined]  # TLS does it
        got = get(comm, "a", "b")
        np.testing.assert_array_equal(got["a"], tls_holder.values["a"])
        header, frames = encode_items({"up": np.ones(500_000)})
        assert comm.request({**header, "op": "put"}, frames)[0]["ok"] is True
        assert tls_holder.values["up"].sum() == 500_000
    finally:
        comm.close()


def test_tls_refuses_a_certificate_of_another_ca_both_ways(
    tls_holder: Holder, authorities: Authorities
) -> None:
    impostor = Security(authorities.stranger.cert, authorities.stranger.key, authorities.client.ca)
    with pytest.raises((ssl.SSLError, ConnectionError)):  # the server checks our certificate
        connect(tls_holder.address, SECRET, security=impostor)
    stranger = Holder({"b": b"x"}, scheme="tls", security=security(authorities.stranger))
    try:  # and we check the server's
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(stranger.address, SECRET, security=security(authorities.client))
    finally:
        stranger.listener.close()
    assert tls_holder.puts == 0


def test_tls_refuses_a_client_without_a_certificate(
    tls_holder: Holder, authorities: Authorities
) -> None:
    ctx = ssl.create_default_context(cafile=authorities.worker.ca)
    ctx.check_hostname = False
    with socket.create_connection(parse_address(tls_holder.address), timeout=5) as raw:
        raw.recv(GREETING, socket.MSG_WAITALL)
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw) as tls:  # the server asks for our certificate
                tls.recv(NONCE)


def test_a_process_without_tls_settings_is_told_what_to_set(tls_holder: Holder) -> None:
    with pytest.raises(AuthenticationError, match="RDIST_TLS_CERT"):
        connect(tls_holder.address, SECRET)


def test_a_process_with_tls_never_talks_plain_tcp(holder: Holder, authorities: Authorities) -> None:
    with pytest.raises(AuthenticationError, match="plain TCP"):
        connect(holder.address, SECRET, security=security(authorities.client))


def test_tls_settings_are_checked_when_read(authorities: Authorities, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tls-ca"):
        Security(tls_cert=authorities.worker.cert)
    with pytest.raises(ConfigError, match="not a file"):
        Security(str(tmp_path / "missing.pem"), None, authorities.worker.ca)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="cannot load"):
        Security(str(garbage), None, authorities.worker.ca).check()
    with pytest.raises(ConfigError, match="--tls-cert"):
        TCPListener("127.0.0.1", 0, SECRET, lambda h, f: ({}, []), None, scheme="tls")
    env = authorities.client.env()
    from rdist.config import load_config

    from_env = Security.from_config(load_config(env=env))
    assert from_env == security(authorities.client) and from_env.enabled
    assert not Security.from_config(load_config(env={})).enabled


def test_the_same_user_on_this_host_takes_the_local_socket_even_with_tls(
    tls_holder: Holder,
) -> None:
    if not local_sockets_enabled():
        pytest.skip("abstract unix sockets are Linux only")
    tls_holder.listener.add_local_alias(tls_holder.address)
    comm = connect(tls_holder.address, SECRET, security=security_of(tls_holder))
    try:
        assert comm.sock.family == socket.AF_UNIX  # type: ignore[attr-defined]
        assert get(comm, "b") == {"b": b"small"}
    finally:
        comm.close()


def security_of(h: Holder) -> Security:
    assert h.listener.security is not None
    return h.listener.security
