"""Peers on one host: an abstract unix socket per data server, for processes of one user.

On Linux a data server also listens on an abstract unix socket named after its advertised
address (:func:`local_name`); a client first tries that name and falls back to TCP, so
peers on one host skip the TCP stack (about 1.5x the loopback throughput).
``RDIST_UNIX_SOCKETS=0`` turns this off.

Abstract names have no permissions: any local user can bind one first, or connect to it.
So both ends check the other's user id with ``SO_PEERCRED`` (the kernel's word, which no
peer can forge): a client refuses a socket held by another user -- a squatter -- and
falls back to TCP; a server closes a connection from another user before sending a byte.
A connection that passed both checks joins two processes of the same user, which could
read each other's memory anyway, so it needs no per-message MAC (see :mod:`rdist.comm.tcp`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import struct
import sys

log = logging.getLogger("rdist.comm")

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: Addresses whose local socket we already found held by another user (logged once each).
_SQUATTED: set[str] = set()


def local_sockets_enabled() -> bool:
    return sys.platform.startswith("linux") and os.environ.get("RDIST_UNIX_SOCKETS", "1") != "0"


def local_name(address: str) -> str:
    """The abstract unix socket (Linux) of the data server advertising ``address``."""
    digest = hashlib.sha256(address.encode()).hexdigest()[:32]
    return f"\0rdist-{digest}"


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a connected unix socket."""
    _, uid, _ = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
    return int(uid)


def same_user(sock: socket.socket) -> bool:
    try:
        return peer_uid(sock) == os.getuid()
    except OSError:
        return False


def connect_local(address: str, timeout: float) -> socket.socket | None:
    """A connection to the local socket of ``address`` when one of our own user holds it."""
    if not local_sockets_enabled():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(local_name(address))
    except OSError:
        sock.close()
        return None
    if not same_user(sock):
        sock.close()
        if address not in _SQUATTED:
            _SQUATTED.add(address)
            log.warning(
                "the local socket of %s is held by another user: using TCP to reach it", address
            )
        return None
    return sock


def listen_local(address: str) -> socket.socket | None:
    """A listening socket on the local name of ``address``, or None (taken, unsupported)."""
    if not local_sockets_enabled():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(local_name(address))
        sock.listen(128)
    except OSError as exc:  # taken -- maybe by a squatter, whom clients refuse -- : TCP only
        log.warning("no local socket for %s (%s): peers on this host use TCP", address, exc)
        sock.close()
        return None
    return sock
