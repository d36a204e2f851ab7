"""Authenticated TCP connections for the data plane.

Handshake (fixed sizes, so nothing is parsed before the peer has proven it knows the
cluster secret)::

    server -> client   b"RDIST1" + server_nonce(32)
    client -> server   client_nonce(32) + HMAC(secret, b"c" + server_nonce + client_nonce)
    server -> client   HMAC(secret, b"s" + client_nonce + server_nonce)

Messages: 4-byte little-endian header length, a msgpack map with ``lengths`` (frame sizes),
then the raw frames. Large frames are received straight into preallocated buffers.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import socket
import threading
from typing import Any, Callable

import msgpack

log = logging.getLogger("rdist.comm")

MAGIC = b"RDIST1"
NONCE = 32
DIGEST = 32
MAX_HEADER = 64 * 1024 * 1024
_SMALL = 64 * 1024


class AuthenticationError(ConnectionError):
    pass


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed by peer")
        got += k
    return buf


def send_msg(sock: socket.socket, header: dict[str, Any], frames: list[Any] = ()) -> None:  # type: ignore[assignment]
    views = [memoryview(f).cast("B") for f in frames]
    header["lengths"] = [v.nbytes for v in views]
    head = msgpack.packb(header, use_bin_type=True)
    prefix = len(head).to_bytes(4, "little")
    total = sum(v.nbytes for v in views)
    if total <= _SMALL:
        sock.sendall(b"".join([prefix, head, *views]))
        return
    sock.sendall(prefix + head)
    for v in views:
        sock.sendall(v)


def recv_msg(sock: socket.socket) -> tuple[dict[str, Any], list[bytearray]]:
    n = int.from_bytes(recv_exact(sock, 4), "little")
    if n > MAX_HEADER:
        raise ConnectionError(f"header of {n} bytes exceeds {MAX_HEADER}")
    header = msgpack.unpackb(bytes(recv_exact(sock, n)), raw=False, strict_map_key=False)
    if not isinstance(header, dict):
        raise ConnectionError("malformed header")
    frames = [recv_exact(sock, int(length)) for length in header.get("lengths", ())]
    return header, frames


def client_handshake(sock: socket.socket, secret: bytes) -> None:
    hello = bytes(recv_exact(sock, len(MAGIC) + NONCE))
    if not hello.startswith(MAGIC):
        raise AuthenticationError("peer is not an rdist data server")
    server_nonce = hello[len(MAGIC):]
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


class Connection:
    """One authenticated client connection; request/response, one at a time."""

    def __init__(self, address: str, secret: bytes, timeout: float = 30.0) -> None:
        self.address = address
        self.sock = socket.create_connection(parse_address(address), timeout=timeout)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client_handshake(self.sock, secret)
        except BaseException:
            self.sock.close()  # a failed handshake must not leak the socket
            raise
        self.sock.settimeout(None)
        self.lock = threading.Lock()

    def request(self, header: dict[str, Any], frames: list[Any] = ()) -> tuple[dict[str, Any], list[bytearray]]:  # type: ignore[assignment]
        with self.lock:
            send_msg(self.sock, header, frames)
            return recv_msg(self.sock)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class ConnectionPool:
    """Keeps one connection per peer; a broken one is replaced on next use."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self._conns: dict[str, Connection] = {}
        self._lock = threading.Lock()

    def request(self, address: str, header: dict[str, Any], frames: list[Any] = ()) -> tuple[dict[str, Any], list[bytearray]]:  # type: ignore[assignment]
        for attempt in (0, 1):
            conn = self._get(address)
            try:
                return conn.request(header, frames)
            except (ConnectionError, OSError):
                self._drop(address, conn)
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _get(self, address: str) -> Connection:
        with self._lock:
            conn = self._conns.get(address)
        if conn is None:
            conn = Connection(address, self.secret)
            with self._lock:
                self._conns[address] = conn
        return conn

    def _drop(self, address: str, conn: Connection) -> None:
        conn.close()
        with self._lock:
            if self._conns.get(address) is conn:
                del self._conns[address]

    def close(self) -> None:
        with self._lock:
            conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            conn.close()


Handler = Callable[[dict[str, Any], list[bytearray]], tuple[dict[str, Any], list[Any]]]


class Server:
    """Accepts authenticated connections and answers requests with ``handler``."""

    def __init__(self, host: str, port: int, secret: bytes, handler: Handler) -> None:
        self.secret = secret
        self.handler = handler
        self.listener = socket.create_server((host, port), reuse_port=False)
        self.listener.settimeout(None)
        self.host, self.port = self.listener.getsockname()[:2]
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, name="rdist-data-accept", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closing:
            try:
                sock, peer = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock, peer), daemon=True,
                             name="rdist-data-conn").start()

    def _serve(self, sock: socket.socket, peer: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(10)
            server_handshake(sock, self.secret)
            sock.settimeout(None)
            while not self._closing:
                header, frames = recv_msg(sock)
                reply, out = self.handler(header, frames)
                send_msg(sock, reply, out)
        except AuthenticationError as exc:
            log.warning("refused connection from %s: %s", peer, exc)
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("data connection from %s failed", peer)
        finally:
            sock.close()

    def close(self) -> None:
        self._closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
