"""Authenticated TCP (and TLS) connections for the data plane: ``tcp://`` / ``tls://host:port``.

Connecting (:class:`Connection`): a peer on this host is first tried on its local unix
socket (:mod:`rdist.comm.local`, same user only), then TCP; the server greets, TLS runs on
``tls://`` addresses (:mod:`rdist.comm.security`), then the cluster-secret handshake
(:mod:`rdist.comm.handshake`), all within one deadline. Serving: :mod:`rdist.comm.listener`.

Messages: 4-byte little-endian header length, a msgpack map with ``lengths`` (frame sizes),
then the raw frames. Sending gathers the length, header and frames into ``sendmsg`` calls
straight from the callers' buffers (numpy arrays are never copied); receiving reads small
pieces through one 64 KiB buffer (few system calls) and large frames with ``recv_into``
straight into preallocated huge-page memory (:func:`rdist.comm.buffers.host_buffer`).

On plain TCP every message is also authenticated, because nothing else binds it to the
handshake: a relay could forward the handshake and then alter or inject messages (a
pickle that runs in the client). Each message carries two HMAC-SHA256 tags under the
connection's key for its direction (:class:`~rdist.comm.handshake.SessionKeys`), chained by
a message counter so nothing can be replayed, dropped or reordered either::

    length(4) + header + tag(counter, length, header)  + frames + tag(... and the frames)

The first tag is checked before the header is parsed, the second before the message is
handed to anybody (nothing is unpickled before it); a failing tag closes the connection.
Large frames enter the second tag as the GMAC tags of their 1 MiB pieces
(:mod:`rdist.comm.integrity`: ~10 GB/s, where HMAC-SHA256 over the bytes ran at ~1.2 GB/s),
hashed as they are sent and received, so both ends hash while the other is still moving
bytes. TLS (integrity of its own) and same-user unix sockets
(the kernel vouches for both ends) carry no tags.
"""

from __future__ import annotations

import hmac
import logging
import socket
import ssl
import threading
import time
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
)
from rdist.comm.handshake import (
    NONCE,
    WELCOME,
    Deadline,
    PeerBusy,
    SessionKeys,
    client_handshake,
    read_greeting,
)
from rdist.comm.integrity import CHUNK, TAG, MessageAuth, pieces
from rdist.comm.local import connect_local, local_name, local_sockets_enabled
from rdist.comm.security import Security

log = logging.getLogger("rdist.comm")

#: The greeting of a server that admits us (a refusal has the same length).
MAGIC = WELCOME
MAX_HEADER = 64 * 1024 * 1024
#: Messages up to this size are joined and written with one ``sendall``.
_SMALL = 64 * 1024
_READ_BUFFER = 64 * 1024
#: Buffers per ``sendmsg`` call (the kernel's IOV_MAX is 1024).
_IOV_MAX = 512
TLS_SCHEMES = ("tls",)

__all__ = [
    "AuthenticationError",
    "Connection",
    "MAGIC",
    "NONCE",
    "PeerBusy",
    "TCPComm",
    "local_name",
    "local_sockets_enabled",
    "parse_address",
]


def parse_address(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def format_address(host: str, port: int, scheme: str = "tcp") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


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


def _groups(views: list[memoryview]) -> list[list[tuple[memoryview, bool]]]:
    """The authenticated parts of ``views`` (:func:`~rdist.comm.integrity.pieces`), in
    consecutive groups of about :data:`~rdist.comm.integrity.CHUNK` bytes: each group is
    written, then hashed while the peer receives it."""
    groups: list[list[tuple[memoryview, bool]]] = [[]]
    filled = 0
    for view in views:
        for part, is_piece in pieces(view):
            if filled and filled + part.nbytes > CHUNK:
                groups.append([])
                filled = 0
            groups[-1].append((part, is_piece))
            filled += part.nbytes
    return [g for g in groups if g]


class TCPComm(Comm):
    """A connected, already authenticated socket; ``keys`` given: every message tagged."""

    def __init__(self, sock: socket.socket, peer: str, keys: SessionKeys | None = None) -> None:
        self.sock = sock
        self.peer = peer
        self._buf = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self._closed = False
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._out = MessageAuth(keys.send) if keys else None
        self._in = MessageAuth(keys.recv) if keys else None
        #: since when we wait for the next request (monotonic); None while one is under way
        self.idle_since: float | None = None

    @property
    def authenticated_messages(self) -> bool:
        return self._out is not None

    # -- writing ---------------------------------------------------------------------------
    def _write(self, views: list[memoryview]) -> None:
        if self._tls:  # SSL sockets have no sendmsg
            for view in views:
                self.sock.sendall(view)
        else:
            sendmsg_all(self.sock, views)

    def send(self, header: dict[str, Any], frames: Frames = ()) -> None:
        views = as_views(frames)
        head = msgpack.packb({**header, "lengths": [v.nbytes for v in views]}, use_bin_type=True)
        prefix = len(head).to_bytes(4, "little") + head
        small = sum(v.nbytes for v in views) <= _SMALL
        if self._out is None:
            if small:
                self.sock.sendall(b"".join([prefix, *views]))
            else:
                self._write([memoryview(prefix), *views])
            return
        tag = self._out.next()
        head_tag = tag.prefix(prefix)
        if small:
            tag.feed([part for view in views for part in pieces(view)])
            self.sock.sendall(b"".join([prefix, head_tag, *views, tag.digest()]))
            return
        self._write([memoryview(prefix), memoryview(head_tag)])
        for group in _groups(views):  # the peer hashes one while we hash the next
            self._write([part for part, _ in group])
            tag.feed(group)
        self.sock.sendall(tag.digest())

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

    def _check(self, expected: bytes, what: str) -> None:
        if not hmac.compare_digest(bytes(self._read(TAG)), expected):
            log.warning("refused a forged or altered message (%s) from %s", what, self.peer)
            self.close()
            raise AuthenticationError(
                f"a message from {self.peer} failed its integrity check ({what}): "
                "someone between us altered or injected it"
            )

    def recv(self) -> Message:
        self.idle_since = time.monotonic()
        size = self._read(4)
        self.idle_since = None
        n = int.from_bytes(size, "little")
        if n > MAX_HEADER:
            raise ConnectionError(f"header of {n} bytes exceeds {MAX_HEADER}")
        head = self._read(n)
        tag = None
        if self._in is not None:
            tag = self._in.next()
            self._check(tag.prefix(size + head), "header")
        header = msgpack.unpackb(head, raw=False, strict_map_key=False)
        lengths = header.get("lengths", ()) if isinstance(header, dict) else None
        if not isinstance(lengths, (list, tuple)) or not all(
            isinstance(x, int) and x >= 0 for x in lengths
        ):
            raise ConnectionError("malformed message header")
        frames = []
        for length in lengths:
            buf = host_buffer(length)
            view = memoryview(buf).cast("B")
            if tag is None:
                self._read_into(view)
            else:
                for part, is_piece in pieces(view):
                    self._read_into(part)
                    tag.feed([(part, is_piece)])
            frames.append(buf)
        if tag is not None:
            self._check(tag.digest(), "frames")
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


def _open(address: str, deadline: Deadline) -> tuple[socket.socket, bool]:
    """A connected socket to ``address``: ``(socket, is_local)``."""
    sock = connect_local(address, deadline.remaining())
    if sock is not None:
        return sock, True
    sock = socket.create_connection(parse_address(address), timeout=deadline.remaining())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, False


def _secure(
    sock: socket.socket, security: Security, server_side: bool, deadline: Deadline
) -> ssl.SSLSocket:
    """TLS over ``sock`` (mutual verification), the handshake within ``deadline``."""
    tls = security.context(server_side).wrap_socket(
        sock, server_side=server_side, do_handshake_on_connect=False
    )
    try:
        deadline.arm(tls)
        tls.do_handshake()  # its timeout bounds the whole TLS handshake
    except BaseException:
        tls.close()  # it owns the descriptor now
        raise
    return tls


def check_scheme(address: str, security: Security | None) -> bool:
    """Whether ``address`` is reached over TLS; refuses what our settings cannot do."""
    scheme = address.partition("://")[0] if "://" in address else "tcp"
    enabled = security is not None and security.enabled
    if scheme in TLS_SCHEMES and not enabled:
        raise AuthenticationError(
            f"{address} speaks TLS: set RDIST_TLS_CERT, RDIST_TLS_KEY and RDIST_TLS_CA "
            "(a certificate of the cluster's CA) to reach it"
        )
    if scheme not in TLS_SCHEMES and enabled:
        raise AuthenticationError(
            f"{address} is a plain TCP address, and this process uses TLS for the data "
            "plane: start that worker with --tls-cert/--tls-key/--tls-ca too"
        )
    return scheme in TLS_SCHEMES


class Connection(TCPComm):
    """A client connection: connects, proves it knows the secret, checks the server does.

    Raises :class:`~rdist.comm.handshake.PeerBusy` when the server is at its connection
    cap, AuthenticationError for a server (or relay) without the secret or certificate."""

    def __init__(
        self,
        address: str,
        secret: bytes,
        timeout: float = 30.0,
        security: Security | None = None,
    ) -> None:
        self.address = address
        tls = check_scheme(address, security)
        deadline = Deadline(timeout)
        sock, local = _open(address, deadline)
        try:
            read_greeting(sock, deadline)
            if tls and not local:
                assert security is not None
                sock = _secure(sock, security, False, deadline)
            keys = client_handshake(sock, secret, deadline)
        except BaseException:
            sock.close()  # a failed handshake must not leak the socket
            raise
        sock.settimeout(None)
        super().__init__(sock, address, None if (local or tls) else keys)
        self.lock = threading.Lock()

    def request(self, header: dict[str, Any], frames: Frames = ()) -> Message:
        with self.lock:
            return super().request(header, frames)


class _Backend:
    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def connect(
        self, location: str, secret: bytes, timeout: float, security: Security | None = None
    ) -> Comm:
        return Connection(f"{self.scheme}://{location}", secret, timeout, security)

    def listen(
        self, location: str, secret: bytes, handler: Handler, security: Security | None = None
    ) -> Listener:
        from rdist.comm.listener import TCPListener

        host, port = parse_address(location) if location else ("127.0.0.1", 0)
        return TCPListener(host, port, secret, handler, security, scheme=self.scheme)


register_backend("tcp", _Backend("tcp"))
register_backend("tls", _Backend("tls"))
