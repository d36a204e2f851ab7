"""An in-memory transport (``inproc://name``) for tests: no sockets, same semantics.

Both ends live in one process and exchange messages through queues. To behave like the
wire, headers go through msgpack and frames are copied into fresh buffers, so a receiver
never aliases the sender's memory. A connection is authenticated by comparing secrets
before the listener sees anything, as the TCP handshake does.
"""

from __future__ import annotations

import hmac
import itertools
import logging
import os
import queue
import threading
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from rdist.comm.security import Security

log = logging.getLogger("rdist.comm")

_LISTENERS: dict[str, InprocListener] = {}
_LOCK = threading.Lock()
_COUNTER = itertools.count(1)
_CLOSED = object()


class InprocComm(Comm):
    def __init__(self, peer: str, inbox: queue.Queue[Any], outbox: queue.Queue[Any]) -> None:
        self.peer = peer
        self._inbox = inbox
        self._outbox = outbox
        self._closed = False

    def send(self, header: dict[str, Any], frames: Frames = ()) -> None:
        if self._closed:
            raise ConnectionError("comm closed")
        views = as_views(frames)
        wire = msgpack.packb({**header, "lengths": [v.nbytes for v in views]}, use_bin_type=True)
        copies = []
        for view in views:
            buf = host_buffer(view.nbytes)
            memoryview(buf).cast("B")[:] = view
            copies.append(buf)
        self._outbox.put((wire, copies))

    def recv(self) -> Message:
        if self._closed:
            raise ConnectionError("comm closed")
        item = self._inbox.get()
        if item is _CLOSED:
            self._closed = True
            raise ConnectionError("connection closed by peer")
        wire, frames = item
        return msgpack.unpackb(wire, raw=False, strict_map_key=False), frames

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._outbox.put(_CLOSED)
            self._inbox.put(_CLOSED)  # wake our own pending recv, if any

    @property
    def closed(self) -> bool:
        return self._closed


class InprocListener(Listener):
    def __init__(self, name: str, secret: bytes, handler: Handler) -> None:
        self.address = f"inproc://{name}"
        self.secret = secret
        self.handler = handler
        self._closing = threading.Event()
        self._comms: list[InprocComm] = []
        with _LOCK:
            if self.address in _LISTENERS:
                raise OSError(f"{self.address} is already in use")
            _LISTENERS[self.address] = self

    def start(self) -> None:
        pass

    def accept(self, secret: bytes) -> InprocComm:
        if self._closing.is_set():
            raise ConnectionRefusedError(f"{self.address} is closed")
        if not hmac.compare_digest(secret, self.secret):
            log.warning(
                "refused data connection to %s: peer failed the cluster-secret check", self.address
            )
            raise AuthenticationError("peer failed the cluster-secret challenge")
        to_server: queue.Queue[Any] = queue.Queue()
        to_client: queue.Queue[Any] = queue.Queue()
        server_end = InprocComm("inproc-client", to_server, to_client)
        client_end = InprocComm(self.address, to_client, to_server)
        self._comms.append(server_end)
        threading.Thread(
            target=serve,
            args=(server_end, self.handler, self._closing, "inproc"),
            name="rdist-inproc-conn",
            daemon=True,
        ).start()
        return client_end

    def close(self) -> None:
        self._closing.set()
        with _LOCK:
            if _LISTENERS.get(self.address) is self:
                del _LISTENERS[self.address]
        for comm in self._comms:
            comm.close()


class _Backend:
    """Security settings do not apply: both ends are this process."""

    def connect(
        self, location: str, secret: bytes, timeout: float, security: Security | None = None
    ) -> Comm:
        with _LOCK:
            listener = _LISTENERS.get(f"inproc://{location}")
        if listener is None:
            raise ConnectionRefusedError(f"nobody listens on inproc://{location}")
        return listener.accept(secret)

    def listen(
        self, location: str, secret: bytes, handler: Handler, security: Security | None = None
    ) -> Listener:
        name = location or f"{os.getpid()}/{next(_COUNTER)}"
        return InprocListener(name, secret, handler)


register_backend("inproc", _Backend())
