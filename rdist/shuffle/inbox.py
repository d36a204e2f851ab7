"""The pieces that arrived at a worker for its output partitions, kept serialized.

A piece is the part of one input partition bound for one output partition: ``(input,
frames)``. Once an output partition is taken (assembled by its unpack) its pieces leave
memory but stay on disk until the exchange is forgotten (a newer run of it, the
exchange's end, the worker closing): a second run of the unpack finds them again.

Pieces of one output partition are kept by input, so a transfer that runs
again (its worker was lost, the scheduler recomputed it) replaces what it sent before
instead of doubling it. Beyond ``memory_budget`` bytes in memory, the largest partitions
go to one append-only file each under ``directory``; :meth:`Inbox.take` reads them back.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import threading
import time
from typing import Any

from rdist.protocol.serialize import frame_nbytes

#: bytes of received pieces held in memory per worker before the largest partitions spill
DEFAULT_MEMORY_BUDGET = 32 * 2**20
#: seconds an exchange untouched (nothing received, nothing taken) keeps its files here: an
#: unpack run again after that finds its pieces gone and restarts the exchange
RETAIN_SECONDS = 600.0

_COUNT = struct.Struct("<II")  # input partition, number of frames
_LENGTH = struct.Struct("<Q")


class PiecesGone(LookupError):
    """The pieces of an output partition were taken already (its unpack runs again: the
    result it made was lost), so the exchange must run again to make them anew."""


class Inbox:
    """The received pieces of every exchange on one worker (thread-safe)."""

    def __init__(
        self,
        directory: str | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        retain_seconds: float = RETAIN_SECONDS,
    ) -> None:
        self.memory_budget = memory_budget
        self.retain_seconds = retain_seconds
        self._touched: dict[str, float] = {}  #: exchange -> when it last received or gave
        self._next_sweep = 0.0
        self._base = directory
        self._dir: str | None = None
        self._lock = threading.Lock()
        #: (exchange, output) -> input -> frames
        self._memory: dict[tuple[str, int], dict[int, list[Any]]] = {}
        self._sizes: dict[tuple[str, int], int] = {}
        #: (exchange, output) -> inputs whose piece is in that partition's file
        self._on_disk: dict[tuple[str, int], set[int]] = {}
        self._taken: set[tuple[str, int]] = set()
        self._gone: set[str] = set()  #: exchanges forgotten here: their pieces cannot come back
        self._files = threading.Lock()  #: one reader or writer of the partition files at once
        self.memory_bytes = 0
        self.spilled_bytes = 0  #: total written to disk (tests, metrics)

    # -- arriving --------------------------------------------------------------------------
    def add(self, exchange: str, source: int, pieces: dict[int, list[Any]]) -> None:
        self._touch(exchange)
        with self._lock:
            for part, frames in pieces.items():
                where = (exchange, part)
                if where in self._taken:
                    continue  # a late piece for a partition already assembled
                if source in self._on_disk.get(where, ()):
                    continue  # a re-run transfer sends the same rows again
                held = self._memory.setdefault(where, {})
                old = held.get(source)
                if old is not None:
                    self._account(where, -_nbytes(old))
                held[source] = frames
                self._account(where, _nbytes(frames))
            if self.memory_bytes > self.memory_budget:
                self._spill()

    def _account(self, where: tuple[str, int], delta: int) -> None:
        self._sizes[where] = self._sizes.get(where, 0) + delta
        self.memory_bytes += delta

    def _spill(self) -> None:
        """Largest partitions first, down to half the budget (so spills come in batches)."""
        goal = self.memory_budget // 2
        for where in sorted(self._sizes, key=self._sizes.__getitem__, reverse=True):
            if self.memory_bytes <= goal:
                break
            held = self._memory.pop(where, {})
            if not held:
                continue
            with open(self._path(where), "ab") as f:
                for source, frames in held.items():
                    _write_piece(f, source, frames)
            self._on_disk.setdefault(where, set()).update(held)
            size = self._sizes.pop(where, 0)
            self.memory_bytes -= size
            self.spilled_bytes += size

    def _path(self, where: tuple[str, int]) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="rdist-shuffle-", dir=self._base)
        return os.path.join(self._dir, f"{where[0]}-{where[1]}")

    # -- leaving ---------------------------------------------------------------------------
    def take(self, exchange: str, part: int) -> list[tuple[int, list[Any]]]:
        """Every piece of output ``part`` (by input, in input order). They leave memory but
        stay on disk, so that the unpack can run again (its result lost, or dropped by a
        peer that could not fetch it) without the whole exchange running again; PiecesGone
        once the exchange was forgotten here."""
        where = (exchange, part)
        self._touch(exchange)
        with self._files:
            with self._lock:
                if exchange in self._gone:
                    raise PiecesGone(f"output {part} of {exchange} is gone from here")
                self._taken.add(where)
                held = self._memory.pop(where, {})
                self.memory_bytes -= self._sizes.pop(where, 0)
                on_disk = self._on_disk.setdefault(where, set())
                self._on_disk[where] = on_disk | set(held)
            pieces = dict(held)
            if on_disk:
                with open(self._path(where), "rb") as f:
                    for source, frames in _read_pieces(f):
                        pieces.setdefault(source, frames)
            if held:  # kept for a second run of the unpack
                with open(self._path(where), "ab") as f:
                    for source, frames in held.items():
                        _write_piece(f, source, frames)
        return sorted(pieces.items())

    def _touch(self, exchange: str) -> None:
        """Note activity; now and then, forget the exchanges idle for ``retain_seconds``."""
        now = time.monotonic()
        with self._lock:
            self._touched[exchange] = now
            if now < self._next_sweep:
                return
            self._next_sweep = now + min(30.0, self.retain_seconds)
            idle = [e for e, t in self._touched.items() if now - t > self.retain_seconds]
            for e in idle:
                del self._touched[e]
        for e in idle:
            self.forget(e)

    def forget(self, exchange: str) -> None:
        """Drop whatever is left of ``exchange`` (it restarted, or is over)."""
        with self._files, self._lock:
            self._gone.add(exchange)
            self._taken = {w for w in self._taken if w[0] != exchange}
            gone = [w for w in (*self._memory, *self._on_disk) if w[0] == exchange]
            for where in set(gone):
                self._memory.pop(where, None)
                self.memory_bytes -= self._sizes.pop(where, 0)
                if self._on_disk.pop(where, None) is not None:
                    try:
                        os.unlink(self._path(where))
                    except FileNotFoundError:
                        pass

    def holds(self, exchange: str) -> bool:
        with self._lock:
            return any(w[0] == exchange for w in (*self._memory, *self._on_disk))

    def close(self) -> None:
        with self._lock:
            self._memory.clear()
            self._sizes.clear()
            self._on_disk.clear()
            self._taken.clear()
            self._gone.clear()
            self.memory_bytes = 0
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None


def _nbytes(frames: list[Any]) -> int:
    return sum(frame_nbytes(f) for f in frames)


def _write_piece(f: Any, source: int, frames: list[Any]) -> None:
    f.write(_COUNT.pack(source, len(frames)))
    for frame in frames:
        f.write(_LENGTH.pack(frame_nbytes(frame)))
    for frame in frames:
        f.write(frame)


def _read_pieces(f: Any) -> list[tuple[int, list[Any]]]:
    out: list[tuple[int, list[Any]]] = []
    while True:
        head = f.read(_COUNT.size)
        if not head:
            return out
        source, count = _COUNT.unpack(head)
        lengths = [_LENGTH.unpack(f.read(_LENGTH.size))[0] for _ in range(count)]
        out.append((source, [_read_exactly(f, n) for n in lengths]))


def _read_exactly(f: Any, n: int) -> bytearray:
    """``n`` bytes read straight into a buffer of their own (one copy, not two)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        step = f.readinto(view[got:])
        if not step:
            raise EOFError(f"a spilled piece ends {n - got} bytes early")
        got += step
    return buf
