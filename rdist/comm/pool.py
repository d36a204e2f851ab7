"""Reusable comms to peers: a few per peer, so transfers to one peer can overlap."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from rdist.comm.core import Comm, Frames, Message, connect

if TYPE_CHECKING:
    from rdist.comm.security import Security

#: Concurrent requests (hence connections) to one peer.
MAX_PER_PEER = 4


class ConnectionPool:
    """``request(address, header, frames)`` over a pooled, authenticated comm.

    A comm that fails is dropped; when it was an idle one (the peer may have closed it
    meanwhile) the request is tried once more on a fresh comm. A fresh comm that fails
    raises at once, so an unreachable peer costs one connection attempt, not two (and a
    peer at its connection cap raises :class:`~rdist.comm.handshake.PeerBusy`).
    ``security`` (TLS settings) applies to every connection.
    """

    def __init__(
        self,
        secret: bytes,
        timeout: float = 10.0,
        max_per_peer: int = MAX_PER_PEER,
        security: Security | None = None,
    ) -> None:
        self.secret = secret
        self.security = security
        self.timeout = timeout
        self.max_per_peer = max_per_peer
        self._idle: dict[str, list[Comm]] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._closed = False

    def request(self, address: str, header: dict[str, Any], frames: Frames = ()) -> Message:
        slots = self._slots_of(address)
        with slots:
            for attempt in (0, 1):
                comm, reused = self._take(address)
                try:
                    reply = comm.request(header, frames)
                except (ConnectionError, OSError):
                    comm.close()
                    if reused and attempt == 0:
                        continue
                    raise
                self._give(address, comm)
                return reply
        raise AssertionError("unreachable")

    def _slots_of(self, address: str) -> threading.BoundedSemaphore:
        with self._lock:
            slots = self._slots.get(address)
            if slots is None:
                slots = self._slots[address] = threading.BoundedSemaphore(self.max_per_peer)
            return slots

    def _take(self, address: str) -> tuple[Comm, bool]:
        with self._lock:
            idle = self._idle.get(address)
            if idle:
                return idle.pop(), True
        return connect(address, self.secret, self.timeout, self.security), False

    def _give(self, address: str, comm: Comm) -> None:
        with self._lock:
            if not self._closed and not comm.closed:
                self._idle.setdefault(address, []).append(comm)
                return
        comm.close()

    def drop(self, address: str) -> None:
        """Close the idle comms to ``address`` (e.g. the peer left)."""
        with self._lock:
            comms = self._idle.pop(address, [])
        for comm in comms:
            comm.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            comms = [c for idle in self._idle.values() for c in idle]
            self._idle = {}
        for comm in comms:
            comm.close()
