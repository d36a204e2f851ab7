"""Memory for received frames: huge pages, recycled.

Receiving into fresh memory is what made large transfers slow: a fresh 200 MB
``bytearray`` costs ~49,000 first-touch page faults plus a memset (~0.8 GB/s on loopback
here). numpy buffers get transparent huge pages (~100 faults), and the kernel still has to
find and zero 200 MB -- at times compacting memory to do so, which made transfer times
swing from 0.1 s to 0.6 s.

So large buffers are recycled: :data:`POOL` remembers the buffers it handed out, and one
whose data nobody uses any more (the array built on it was freed: only the pool still
refers to it) serves the next frame of about its size, already mapped. The pool is bounded
(``RDIST_BUFFER_POOL_BYTES``, default 512 MiB, counting buffers in use), and buffers idle
for :data:`IDLE_SECONDS` are given back to the system (:meth:`BufferPool.trim`, also called
under memory pressure).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

#: Frames at least this large are received into numpy (huge pages) and may be recycled.
LARGE_FRAME = 1 << 20
IDLE_SECONDS = 10.0
DEFAULT_POOL_BYTES = 512 * 1024 * 1024


def _numpy() -> Any:
    """numpy, imported at the first large frame (not at start-up: ~150 ms of every
    worker's start otherwise); None when it is not installed."""
    global _np
    if _np is _UNLOADED:
        try:
            import numpy

            _np = numpy
        except ImportError:  # pragma: no cover - numpy is optional
            _np = None
    return _np


_UNLOADED: Any = object()
_np: Any = _UNLOADED


class BufferPool:
    def __init__(self, capacity: int = DEFAULT_POOL_BYTES) -> None:
        self.capacity = capacity
        self._entries: list[list[Any]] = []  #: [buffer, last handed out (monotonic)]
        self._bytes = 0
        self._lock = threading.Lock()
        self.reused = 0  #: buffers handed out again (tests, metrics)

    @staticmethod
    def _free(entry: list[Any]) -> bool:
        """Nobody uses the buffer: its only references are the entry and getrefcount's own."""
        return sys.getrefcount(entry[0]) <= 2

    def take(self, nbytes: int) -> Any:
        """A writable buffer of exactly ``nbytes`` (a view of a pooled one when possible)."""
        np = _numpy()
        if np is None:
            return bytearray(nbytes)
        now = time.monotonic()
        with self._lock:
            fits = [
                e for e in self._entries if nbytes <= e[0].nbytes <= 2 * nbytes and self._free(e)
            ]
            if fits:
                best = min(fits, key=lambda e: e[0].nbytes)
                best[1] = now
                self.reused += 1
                return best[0][:nbytes]
            self._make_room(nbytes)
            fresh = np.empty(nbytes, dtype="u1")
            if self._bytes + nbytes <= self.capacity:
                self._entries.append([fresh, now])
                self._bytes += nbytes
                return fresh[:nbytes]
        return fresh

    def _make_room(self, nbytes: int) -> None:
        """Drop free buffers, least recently used first, until ``nbytes`` more fit."""
        for entry in sorted(self._entries, key=lambda e: e[1]):
            if self._bytes + nbytes <= self.capacity:
                return
            if self._free(entry):
                self._entries.remove(entry)
                self._bytes -= entry[0].nbytes

    def trim(self, idle: float = IDLE_SECONDS) -> int:
        """Give back free buffers unused for ``idle`` seconds (0: all free ones); bytes freed."""
        cutoff = time.monotonic() - idle
        with self._lock:
            gone = [e for e in self._entries if e[1] <= cutoff and self._free(e)]
            freed = int(sum(e[0].nbytes for e in gone))
            self._entries = [e for e in self._entries if not any(e is g for g in gone)]
            self._bytes -= freed
        return freed

    @property
    def pooled_bytes(self) -> int:
        return self._bytes


POOL = BufferPool(int(os.environ.get("RDIST_BUFFER_POOL_BYTES", DEFAULT_POOL_BYTES)))


def host_buffer(nbytes: int) -> Any:
    """Writable memory for ``nbytes`` received bytes (see the module docstring)."""
    if nbytes >= LARGE_FRAME:
        return POOL.take(nbytes)
    return bytearray(nbytes)
