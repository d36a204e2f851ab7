"""Authenticated TCP connections for the data plane (``tcp://host:port``).

Handshake (fixed sizes, so nothing is parsed before the peer has proven it knows the
cluster secret)::

    server -> client   b"RDIST1" + server_nonce(32)
    client -> server   client_nonce(32) + HMAC(secret, b"c" + server_nonce + client_nonce)
    server -> client   HMAC(secret, b"s" + client_nonce + server_nonce)

On Linux a data server also listens on an abstract unix socket named after its
advertised address (:func:`local_name`); a client first tries that name and falls back to
TCP, so peers on one host skip the TCP stack (about 1.5x the loopback throughput here).
``RDIST_UNIX_SOCKETS=0`` turns this off. The handshake is the same on both.

Messages: 4-byte little-endian header length, a msgpack map with ``lengths`` (frame sizes),
then the raw frames. Sending gathers the length, header and frames into ``sendmsg`` calls
straight from the callers' buffers (numpy arrays are never copied); receiving reads small
pieces through one 64 KiB buffer (few system calls) and large frames with ``recv_into``
straight into preallocated huge-page memory (:func:`rdist.comm.buffers.host_buffer`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import sys
import threading
from functools import partial
from typing import Any

import msgpack

from rdist.comm.buffers import host_buffer
from rdist.comm.core import (
    AuthenticationError,
    Comm,
    Frames,
    Handler,
    Listener,
    Message,
    as_views,
    register_backend,
    serve,
)
from rdist.supervise import supervised

log = logging.getLogger("rdist.comm")

MAGIC = b"RDIST1"
NONCE = 32
DIGEST = 32
MAX_HEADER = 64 * 1024 * 1024
HANDSHAKE_SECONDS = 10.0
#: Messages up to this size are joined and written with one ``sendall``.
_SMALL = 64 * 1024
_READ_BUFFER = 64 * 1024
#: Buffers per ``sendmsg`` call (the kernel's IOV_MAX is 1024).
_IOV_MAX = 512

__all__ = [
    "AuthenticationError",
    "Connection",
    "MAGIC",
    "NONCE",
    "Server",
    "TCPComm",
    "TCPListener",
    "parse_address",
]


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Exactly ``n`` bytes from an unbuffered socket (handshakes only)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed by peer")
        got += k
    return buf


def client_handshake(sock: socket.socket, secret: bytes) -> None:
    hello = bytes(recv_exact(sock, len(MAGIC) + NONCE))
    if not hello.startswith(MAGIC):
        raise AuthenticationError("peer is not an rdist data server")
    server_nonce = hello[len(MAGIC) :]
    client_nonce = os.urandom(NONCE)
    sock.sendall(client_nonce + _mac(secret, b"c", server_nonce, client_nonce))
    proof = bytes(recv_exact(sock, DIGEST))
    if not hmac.compare_digest(proof, _mac(secret, b"s", client_nonce, server_nonce)):
        raise AuthenticationError("data server failed to prove it knows the cluster secret")


def server_handshake(sock: socket.socket, secret: bytes) -> None:
    server_nonce = os.urandom(NONCE)
    sock.sendall(MAGIC + server_nonce)
    answer = bytes(recv_exact(sock, NONCE + DIGEST))
    client_nonce, mac = answer[:NONCE], answer[NONCE:]
    if not hmac.compare_digest(mac, _mac(secret, b"c", server_nonce, client_nonce)):
        raise AuthenticationError("peer failed the cluster-secret challenge")
    sock.sendall(_mac(secret, b"s", client_nonce, server_nonce))


def parse_address(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def format_address(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def local_sockets_enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("RDIST_UNIX_SOCKETS", "1") != "0"


def local_name(address: str) -> str:
    """The abstract unix socket (Linux) of the data server advertising ``address``."""
    digest = hashlib.sha256(address.encode()).hexdigest()[:32]
    return f"\0rdist-{digest}"


def _connect_local(address: str, timeout: float) -> socket.socket | None:
    if not local_sockets_enabled():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(local_name(address))
    except OSError:
        sock.close()
        return None
    return sock


def sendmsg_all(sock: socket.socket, views: list[memoryview]) -> None:
    """Write every view, in order, with as few system calls as the kernel allows."""
    views = [v for v in views if v.nbytes]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i : i + _IOV_MAX])
        while sent:
            n = views[i].nbytes
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0


class TCPComm(Comm):
    """A connected, already authenticated socket."""

    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self._buf = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self._closed = False

    # -- writing ---------------------------------------------------------------------------
    def send(self, header: dict[str, Any], frames: Frames = ()) -> None:
        views = as_views(frames)
        head = msgpack.packb({**header, "lengths": [v.nbytes for v in views]}, use_bin_type=True)
        prefix = len(head).to_bytes(4, "little") + head
        if sum(v.nbytes for v in views) <= _SMALL:
            self.sock.sendall(b"".join([prefix, *views]))
        else:
            sendmsg_all(self.sock, [memoryview(prefix), *views])

    # -- reading ---------------------------------------------------------------------------
    def _fill(self) -> int:
        k = self.sock.recv_into(self._view, len(self._buf))
        if k == 0:
            raise ConnectionError("connection closed by peer")
        self._start, self._end = 0, k
        return k

    def _read_into(self, dest: memoryview) -> None:
        n = dest.nbytes
        got = min(n, self._end - self._start)
        if got:
            dest[:got] = self._view[self._start : self._start + got]
            self._start += got
        if n - got >= len(self._buf):  # large: no detour through our buffer
            while got < n:
                k = self.sock.recv_into(dest[got:], n - got)
                if k == 0:
                    raise ConnectionError("connection closed by peer")
                got += k
            return
        while got < n:
            k = min(self._fill(), n - got)
            dest[got : got + k] = self._view[:k]
            self._start = k
            got += k

    def _read(self, n: int) -> bytearray:
        out = bytearray(n)
        self._read_into(memoryview(out))
        return out

    def recv(self) -> Message:
        n = int.from_bytes(self._read(4), "little")
        if n > MAX_HEADER:
            raise ConnectionError(f"header of {n} bytes exceeds {MAX_HEADER}")
        header = msgpack.unpackb(self._read(n), raw=False, strict_map_key=False)
        lengths = header.get("lengths", ()) if isinstance(header, dict) else None
        if not isinstance(lengths, (list, tuple)) or not all(
            isinstance(x, int) and x >= 0 for x in lengths
        ):
            raise ConnectionError("malformed message header")
        frames = []
        for length in lengths:
            buf = host_buffer(length)
            self._read_into(memoryview(buf).cast("B"))
            frames.append(buf)
        return header, frames

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass

    @property
    def closed(self) -> bool:
        return self._closed


class Connection(TCPComm):
    """A client connection: connects, proves it knows the secret, checks the server does."""

    def __init__(self, address: str, secret: bytes, timeout: float = 30.0) -> None:
        self.address = address
        sock = _connect_local(address, timeout)
        if sock is None:
            sock = socket.create_connection(parse_address(address), timeout=timeout)
        try:
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_handshake(sock, secret)
        except BaseException:
            sock.close()  # a failed handshake must not leak the socket
            raise
        sock.settimeout(None)
        super().__init__(sock, address)
        self.lock = threading.Lock()

    def request(self, header: dict[str, Any], frames: Frames = ()) -> Message:
        with self.lock:
            return super().request(header, frames)


class TCPListener(Listener):
    """Accepts authenticated connections; one thread per connection answers its requests."""

    def __init__(self, host: str, port: int, secret: bytes, handler: Handler) -> None:
        self.secret = secret
        self.handler = handler
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, reuse_port=False)
        self.host, self.port = self.listener.getsockname()[:2]
        self.address = format_address(self.host, self.port)
        self._closing = threading.Event()
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._local: socket.socket | None = None
        self._thread = threading.Thread(
            target=supervised("rdist-data-accept", self._accept_tcp, self._closing),
            name="rdist-data-accept",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def add_local_alias(self, address: str) -> None:
        """Also accept peers of this host on the abstract unix socket of ``address``."""
        if not local_sockets_enabled() or self._local is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(local_name(address))
            sock.listen(128)
        except OSError as exc:  # taken (should not happen) or not supported: TCP only
            log.info("no local socket for %s: %s", address, exc)
            sock.close()
            return
        self._local = sock
        threading.Thread(
            target=supervised(
                "rdist-data-accept-local", partial(self._accept_loop, sock), self._closing
            ),
            name="rdist-data-accept-local",
            daemon=True,
        ).start()

    def _accept_tcp(self) -> None:
        self._accept_loop(self.listener)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._closing.is_set():
            try:
                sock, peer = listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(sock, peer), daemon=True, name="rdist-data-conn"
            ).start()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        with self._lock:
            self._socks.add(sock)
        try:
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(HANDSHAKE_SECONDS)
            server_handshake(sock, self.secret)
            sock.settimeout(None)
        except AuthenticationError as exc:
            log.warning("refused data connection from %s: %s", peer, exc)
            self._forget(sock)
            return
        except (ConnectionError, OSError) as exc:
            log.info("data connection from %s ended during the handshake: %s", peer, exc)
            self._forget(sock)
            return
        try:
            serve(TCPComm(sock, f"{peer}"), self.handler, self._closing, peer)
        finally:
            self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        sock.close()

    def close(self) -> None:
        self._closing.set()
        for listener in (self.listener, self._local):
            if listener is None:
                continue
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:  # wake connection threads blocked in recv
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


#: The historical name of the listener.
Server = TCPListener


class _Backend:
    def connect(self, location: str, secret: bytes, timeout: float) -> Comm:
        return Connection(f"tcp://{location}", secret, timeout)

    def listen(self, location: str, secret: bytes, handler: Handler) -> Listener:
        host, port = parse_address(location) if location else ("127.0.0.1", 0)
        return TCPListener(host, port, secret, handler)


register_backend("tcp", _Backend())
