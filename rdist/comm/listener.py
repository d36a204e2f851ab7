"""A data server's listener: accepts, admits or refuses, authenticates, serves.

- **A cap on connections** (:data:`MAX_CONNECTIONS`, of which at most
  :data:`MAX_HANDSHAKES` still unauthenticated). When full, the connection idle longest
  (a pooled one waiting for its next request: its owner reconnects when it needs it) makes
  room; when none is idle the newcomer is refused with the ``busy`` greeting
  (:data:`~rdist.comm.handshake.BUSY`) and backs off or asks another holder, as for a
  ``busy`` answer to a request.
- **One deadline per handshake** (:data:`~rdist.comm.handshake.HANDSHAKE_SECONDS`): greeting,
  TLS and challenge-response together, however slowly a peer trickles its bytes.
- **An accept loop that outlives exhaustion**: out of descriptors (EMFILE, ENFILE), memory
  or threads, it logs, backs off (up to :data:`ACCEPT_BACKOFF_MAX`) and accepts again;
  waiting peers stay in the kernel's backlog meanwhile. Only closing the listener ends it.
- **Local peers** on the abstract unix socket must be of our own user (``SO_PEERCRED``):
  anybody else is closed on before a byte is sent (:mod:`rdist.comm.local`).
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from rdist.comm.core import AuthenticationError, Handler, Listener, serve
from rdist.comm.handshake import (
    BUSY,
    HANDSHAKE_SECONDS,
    WELCOME,
    Deadline,
    SessionKeys,
    send_all,
    server_handshake,
)
from rdist.comm.local import listen_local, peer_uid, same_user
from rdist.comm.security import Security
from rdist.comm.tcp import TLS_SCHEMES, TCPComm, _secure, format_address
from rdist.config import ConfigError
from rdist.supervise import supervised

log = logging.getLogger("rdist.comm")

#: Connections one data server keeps at once (each is a descriptor and a thread).
MAX_CONNECTIONS = 512
#: Of those, connections still in their handshake (what a stranger can hold).
MAX_HANDSHAKES = 64
#: A connection waiting this long for its next request may be closed to admit another.
EVICT_IDLE_SECONDS = 1.0
ACCEPT_BACKOFF_MIN = 0.01
ACCEPT_BACKOFF_MAX = 1.0
#: Errors of a full process or system: wait and accept again.
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Errors of one connection that went away before we accepted it.
TRANSIENT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN})


@dataclass
class _Entry:
    """One open connection: the socket in use (TLS wraps it), its comm once authenticated."""

    sock: socket.socket
    comm: TCPComm | None = None


class TCPListener(Listener):
    """Accepts authenticated connections; one thread per connection answers its requests."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: bytes,
        handler: Handler,
        security: Security | None = None,
        scheme: str = "tcp",
        max_connections: int = MAX_CONNECTIONS,
        max_handshakes: int = MAX_HANDSHAKES,
    ) -> None:
        self.secret = secret
        self.handler = handler
        self.tls = scheme in TLS_SCHEMES
        if self.tls and not (security and security.enabled):
            raise ConfigError(
                f"{scheme}:// needs the data plane's TLS settings: --tls-cert, --tls-key "
                "and --tls-ca (RDIST_TLS_CERT, RDIST_TLS_KEY, RDIST_TLS_CA)"
            )
        self.security = security
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, reuse_port=False)
        self.host, self.port = self.listener.getsockname()[:2]
        self.address = format_address(self.host, self.port, scheme)
        self._closing = threading.Event()
        #: every open connection, by the socket accept() gave
        self._conns: dict[socket.socket, _Entry] = {}
        self._lock = threading.Lock()
        self._local: socket.socket | None = None
        self.refused = 0  #: connections turned away at the cap (tests, metrics)
        self.evicted = 0  #: idle connections closed to make room
        self._thread = threading.Thread(
            target=supervised(
                "rdist-data-accept", partial(self._accept_loop, self.listener), self._closing
            ),
            name="rdist-data-accept",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def add_local_alias(self, address: str) -> None:
        """Also accept peers of this host (and user) on the local socket of ``address``."""
        if self._local is not None:
            return
        self._local = listen_local(address)
        if self._local is not None:
            threading.Thread(
                target=supervised(
                    "rdist-data-accept-local",
                    partial(self._accept_loop, self._local),
                    self._closing,
                ),
                name="rdist-data-accept-local",
                daemon=True,
            ).start()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    # -- accepting ---------------------------------------------------------------------------
    def _accept_loop(self, listener: socket.socket) -> None:
        backoff = ACCEPT_BACKOFF_MIN
        failing_since = 0.0
        while not self._closing.is_set():
            try:
                sock, peer = listener.accept()
            except OSError as exc:
                if self._closing.is_set():
                    return
                if exc.errno in TRANSIENT:
                    continue
                if exc.errno == errno.EBADF:
                    log.error("data listener %s was closed under us: no more peers", self.address)
                    return
                now = time.monotonic()
                if not failing_since or now - failing_since > 10:
                    failing_since = now
                    log.warning(
                        "data server %s cannot accept (%s): retrying, peers wait in the backlog",
                        self.address,
                        exc,
                    )
                self._closing.wait(backoff)
                backoff = min(ACCEPT_BACKOFF_MAX, backoff * 2)
                continue
            backoff, failing_since = ACCEPT_BACKOFF_MIN, 0.0
            self._take(sock, peer)

    def _take(self, sock: socket.socket, peer: Any) -> None:
        """Admit, refuse or close one accepted connection; never raises."""
        if sock.family == socket.AF_UNIX and not same_user(sock):
            log.warning("refused a local data connection from uid %s", _uid_or_unknown(sock))
            sock.close()
            return
        if not self._admit(sock):
            self._refuse(sock)
            return
        try:
            threading.Thread(
                target=self._serve, args=(sock, peer), daemon=True, name="rdist-data-conn"
            ).start()
        except RuntimeError as exc:  # no thread to be had: the peer retries later
            log.warning("data server %s cannot start a thread: %s", self.address, exc)
            self._forget(sock)

    def _admit(self, sock: socket.socket) -> bool:
        with self._lock:
            handshaking = sum(1 for entry in self._conns.values() if entry.comm is None)
            if handshaking >= self.max_handshakes:
                return False
            if len(self._conns) >= self.max_connections and not self._evict_idle():
                return False
            self._conns[sock] = _Entry(sock)
            return True

    def _evict_idle(self) -> bool:
        """Close the connection idle longest (under the lock); False when none is idle."""
        cutoff = time.monotonic() - EVICT_IDLE_SECONDS
        idle = [
            (since, raw)
            for raw, entry in self._conns.items()
            if entry.comm is not None
            and (since := entry.comm.idle_since) is not None
            and since <= cutoff
        ]
        if not idle:
            return False
        _, raw = min(idle, key=lambda pair: pair[0])
        _shutdown(self._conns.pop(raw).sock)  # its thread wakes to a closed connection, ends
        self.evicted += 1
        return True

    def _refuse(self, sock: socket.socket) -> None:
        self.refused += 1
        log.info("data server %s is at its connection cap: refused a peer", self.address)
        try:
            sock.setblocking(False)
            sock.send(BUSY)  # a few bytes into an empty send buffer: never blocks
        except OSError:
            pass
        sock.close()

    # -- serving -----------------------------------------------------------------------------
    def _authenticate(self, sock: socket.socket) -> tuple[socket.socket, SessionKeys | None]:
        """Greet, TLS, challenge-response; the socket to use and the message keys (None
        where the channel vouches for its ends: TLS, a same-user local socket)."""
        deadline = Deadline(HANDSHAKE_SECONDS)
        local = sock.family == socket.AF_UNIX
        if not local:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_all(sock, WELCOME, deadline)
        if self.tls and not local:
            assert self.security is not None
            sock = _secure(sock, self.security, True, deadline)
        try:
            keys = server_handshake(sock, self.secret, deadline)
        except BaseException:
            sock.close()  # the TLS socket, when there is one (it took over the descriptor)
            raise
        sock.settimeout(None)
        return sock, None if (local or self.tls) else keys

    def _serve(self, raw: socket.socket, peer: Any) -> None:
        try:
            sock, keys = self._authenticate(raw)
        except AuthenticationError as exc:
            log.warning("refused data connection from %s: %s", peer, exc)
            self._forget(raw)
            return
        except (ConnectionError, OSError) as exc:  # TimeoutError, ssl.SSLError included
            log.info("data connection from %s ended during the handshake: %s", peer, exc)
            self._forget(raw)
            return
        comm = TCPComm(sock, f"{peer}", keys)
        with self._lock:
            entry = self._conns.get(raw)
            if entry is not None:
                entry.sock, entry.comm = sock, comm
        try:
            if entry is not None and not self._closing.is_set():
                serve(comm, self.handler, self._closing, peer)
        finally:
            self._forget(raw)
            comm.close()

    def _forget(self, raw: socket.socket) -> None:
        with self._lock:
            self._conns.pop(raw, None)
        try:
            raw.close()
        except OSError:
            pass

    def close(self) -> None:
        self._closing.set()
        for listener in (self.listener, self._local):
            if listener is None:
                continue
            _shutdown(listener)
            listener.close()
        with self._lock:
            socks = [entry.sock for entry in self._conns.values()]
        for sock in socks:  # wake connection threads blocked in recv
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    """Wake whoever blocks on ``sock``; on a TLS socket without tearing down its state
    under the thread reading it (``SSLSocket.shutdown`` would)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _uid_or_unknown(sock: socket.socket) -> str:
    try:
        return str(peer_uid(sock))
    except OSError:
        return "unknown"
