"""The data plane's handshake: admission, proof of the cluster secret, per-connection keys.

Fixed sizes, so nothing is parsed before the peer has proven it knows the secret::

    server -> client   greeting: b"RDIST3+" (admitted) or b"RDIST3-" (busy: try later, then close)
    [TLS handshake, on tls:// addresses]
    server -> client   server_nonce(32)
    client -> server   client_nonce(32) + HMAC(secret, b"c" + server_nonce + client_nonce)
    server -> client   HMAC(secret, b"s" + client_nonce + server_nonce)

The greeting is plaintext (before TLS) so that a server at its connection cap can refuse
without spending a TLS handshake, and the refused peer knows to back off rather than
count the server as unreachable.

Both ends then derive one key per direction from both nonces and the secret
(:func:`session_keys`). Where the channel itself does not vouch for its ends (plain TCP),
every later message carries an HMAC under these keys (:mod:`rdist.comm.tcp`), so a relay
that forwarded the handshake cannot alter or inject a single message: it never learns
the keys. The whole handshake has one deadline (:class:`Deadline`), not one per ``recv``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import time
from dataclasses import dataclass

from rdist.comm.core import AuthenticationError

#: Protocol version: peers of another version are refused with a message saying so.
#: (3: large frames enter the message tags through GMAC, :mod:`rdist.comm.integrity`.)
VERSION = b"RDIST3"
WELCOME = VERSION + b"+"
BUSY = VERSION + b"-"
GREETING = len(WELCOME)
NONCE = 32
DIGEST = 32
#: The whole handshake (TCP connect, greeting, TLS, challenge-response) must fit in this.
HANDSHAKE_SECONDS = 10.0


class PeerBusy(ConnectionError):
    """The data server is at its connection cap: ask another holder, or again later."""


@dataclass(frozen=True)
class SessionKeys:
    """The keys of one connection: ours for what we send, theirs for what we receive."""

    send: bytes
    recv: bytes


class Deadline:
    """One time limit for a sequence of socket operations."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"handshake not done within {self.seconds:g} s")
        return left

    def arm(self, sock: socket.socket) -> None:
        """The next blocking call on ``sock`` may take at most what is left."""
        sock.settimeout(self.remaining())


def _mac(secret: bytes, *parts: bytes) -> bytes:
    return hmac.new(secret, b"".join(parts), hashlib.sha256).digest()


def recv_exact(sock: socket.socket, n: int, deadline: Deadline) -> bytes:
    """Exactly ``n`` bytes (handshakes only: unbuffered), all of them before ``deadline``."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        deadline.arm(sock)
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed by peer during the handshake")
        got += k
    return bytes(buf)


def send_all(sock: socket.socket, data: bytes, deadline: Deadline) -> None:
    deadline.arm(sock)  # sendall's timeout bounds the whole call
    sock.sendall(data)


def read_greeting(sock: socket.socket, deadline: Deadline) -> None:
    """Raises :class:`PeerBusy` for a refusal, AuthenticationError for a stranger."""
    greeting = recv_exact(sock, GREETING, deadline)
    if greeting == BUSY:
        raise PeerBusy("data server is at its connection limit")
    if greeting != WELCOME:
        if greeting.startswith(b"RDIST"):
            raise AuthenticationError(
                f"data server speaks protocol {greeting[:6]!r}, we speak {VERSION!r}: "
                "run the same rdist version on every worker and client"
            )
        raise AuthenticationError("peer is not an rdist data server")


def session_keys(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> tuple[bytes, bytes]:
    """``(client-to-server key, server-to-client key)``: labels unlike the proofs' own."""
    return (
        _mac(secret, b"k-c2s", server_nonce, client_nonce),
        _mac(secret, b"k-s2c", server_nonce, client_nonce),
    )


def client_handshake(sock: socket.socket, secret: bytes, deadline: Deadline) -> SessionKeys:
    """Prove we know the secret, check that the server does too (after the greeting)."""
    server_nonce = recv_exact(sock, NONCE, deadline)
    client_nonce = os.urandom(NONCE)
    send_all(sock, client_nonce + _mac(secret, b"c", server_nonce, client_nonce), deadline)
    proof = recv_exact(sock, DIGEST, deadline)
    if not hmac.compare_digest(proof, _mac(secret, b"s", client_nonce, server_nonce)):
        raise AuthenticationError("data server failed to prove it knows the cluster secret")
    c2s, s2c = session_keys(secret, server_nonce, client_nonce)
    return SessionKeys(send=c2s, recv=s2c)


def server_handshake(sock: socket.socket, secret: bytes, deadline: Deadline) -> SessionKeys:
    server_nonce = os.urandom(NONCE)
    send_all(sock, server_nonce, deadline)
    answer = recv_exact(sock, NONCE + DIGEST, deadline)
    client_nonce, mac = answer[:NONCE], answer[NONCE:]
    if not hmac.compare_digest(mac, _mac(secret, b"c", server_nonce, client_nonce)):
        raise AuthenticationError("peer failed the cluster-secret challenge")
    send_all(sock, _mac(secret, b"s", client_nonce, server_nonce), deadline)
    c2s, s2c = session_keys(secret, server_nonce, client_nonce)
    return SessionKeys(send=s2c, recv=c2s)
