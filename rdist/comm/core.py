"""The transport interface of the data plane, and the scheme registry.

A :class:`Comm` carries request/response messages between two authenticated ends: a
msgpack header (a map) plus a list of raw frames (bytes-like buffers). Transports register
a URL scheme: ``tcp://host:port`` and ``tls://host:port`` (sockets, :mod:`rdist.comm.tcp`;
TLS when a :class:`~rdist.comm.security.Security` is configured) and ``inproc://name``
(queues in one process, :mod:`rdist.comm.inproc`, so tests run without sockets -- the idea
of dask's ``comm/inproc``).

Every transport authenticates before it hands a single payload byte to anybody: a peer
that does not know the cluster secret never reaches a handler, so it cannot make us unpickle.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rdist.comm.buffers import LARGE_FRAME, host_buffer  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from rdist.comm.security import Security

log = logging.getLogger("rdist.comm")

#: A frame is anything with the buffer protocol: bytes, bytearray, memoryview, numpy arrays.
Frames = Sequence[Any]
Message = tuple[dict[str, Any], list[Any]]
#: Answers one request: ``(header, frames) -> (reply header, reply frames)``, optionally with
#: a third element, a callable run once the reply has been sent (or failed to be).
Handler = Callable[[dict[str, Any], list[Any]], tuple[Any, ...]]


class AuthenticationError(ConnectionError):
    """The other end does not know the cluster secret (or is not an rdist data server)."""


class Comm(ABC):
    """One authenticated, bidirectional message channel (used request/response)."""

    peer: str = ""

    @abstractmethod
    def send(self, header: dict[str, Any], frames: Frames = ()) -> None: ...

    @abstractmethod
    def recv(self) -> Message: ...

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def closed(self) -> bool: ...

    def request(self, header: dict[str, Any], frames: Frames = ()) -> Message:
        self.send(header, frames)
        return self.recv()


class Listener(ABC):
    """Accepts authenticated comms and answers each request with a :data:`Handler`."""

    #: where peers reach us, e.g. ``tcp://127.0.0.1:40123`` (the real port once bound)
    address: str = ""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...


class Backend(Protocol):
    def connect(
        self, location: str, secret: bytes, timeout: float, security: Security | None = None
    ) -> Comm: ...

    def listen(
        self, location: str, secret: bytes, handler: Handler, security: Security | None = None
    ) -> Listener: ...


_BACKENDS: dict[str, Backend] = {}


def register_backend(scheme: str, backend: Backend) -> None:
    _BACKENDS[scheme] = backend


def split_address(address: str) -> tuple[str, str]:
    """``"tcp://h:1"`` -> ``("tcp", "h:1")``; a bare ``"h:1"`` is TCP."""
    scheme, sep, location = address.partition("://")
    return (scheme, location) if sep else ("tcp", address)


def _backend(scheme: str) -> Backend:
    if scheme not in _BACKENDS:
        from rdist.comm import inproc, tcp  # noqa: F401  (they register themselves)
    try:
        return _BACKENDS[scheme]
    except KeyError:
        raise ValueError(f"unknown transport {scheme!r}; known: {sorted(_BACKENDS)}") from None


def connect(
    address: str, secret: bytes, timeout: float = 10.0, security: Security | None = None
) -> Comm:
    """An authenticated comm to ``address``; raises ConnectionError (or OSError) on failure
    (:class:`~rdist.comm.handshake.PeerBusy`, a ConnectionError, when it is at its cap)."""
    scheme, location = split_address(address)
    return _backend(scheme).connect(location, secret, timeout, security)


def listen(
    address: str, secret: bytes, handler: Handler, security: Security | None = None
) -> Listener:
    scheme, location = split_address(address)
    return _backend(scheme).listen(location, secret, handler, security)


def serve(comm: Comm, handler: Handler, closing: threading.Event, peer: Any) -> None:
    """Answer requests on one authenticated comm until it closes."""
    try:
        while not closing.is_set():
            header, frames = comm.recv()
            answer = handler(header, frames)
            del header, frames
            try:
                comm.send(answer[0], answer[1])
            finally:
                if len(answer) > 2:
                    answer[2]()
                # an idle connection must not keep the last reply's data alive
                del answer
    except (ConnectionError, OSError):
        pass
    except Exception:
        log.exception("data connection from %s failed", peer)
    finally:
        comm.close()


def as_views(frames: Frames) -> list[memoryview]:
    """Flat byte views of ``frames`` (no copies)."""
    return [
        f
        if isinstance(f, memoryview) and f.format == "B" and f.ndim == 1
        else memoryview(f).cast("B")
        for f in frames
    ]
