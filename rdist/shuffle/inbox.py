"""The pieces that arrived at a worker for its output partitions, kept serialized.

A piece is the part of one input partition bound for one output partition: ``(input,
frames)``. Pieces of one output partition are kept by input, so a transfer that runs
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
from typing import Any

from rdist.protocol.serialize import frame_nbytes

#: bytes of received pieces held in memory per worker before the largest partitions spill
DEFAULT_MEMORY_BUDGET = 64 * 2**20

_COUNT = struct.Struct("<II")  # input partition, number of frames
_LENGTH = struct.Struct("<Q")


class PiecesGone(LookupError):
    """The pieces of an output partition were taken already (its unpack runs again: the
    result it made was lost), so the exchange must run again to make them anew."""


class Inbox:
    """The received pieces of every exchange on one worker (thread-safe)."""

    def __init__(self, directory: str | None = None, memory_budget: int = DEFAULT_MEMORY_BUDGET):
        self.memory_budget = memory_budget
        self._base = directory
        self._dir: str | None = None
        self._lock = threading.Lock()
        #: (exchange, output) -> input -> frames
        self._memory: dict[tuple[str, int], dict[int, list[Any]]] = {}
        self._sizes: dict[tuple[str, int], int] = {}
        #: (exchange, output) -> inputs whose piece is in that partition's file
        self._on_disk: dict[tuple[str, int], set[int]] = {}
        self._taken: set[tuple[str, int]] = set()
        self.memory_bytes = 0
        self.spilled_bytes = 0  #: total written to disk (tests, metrics)

    # -- arriving --------------------------------------------------------------------------
    def add(self, exchange: str, source: int, pieces: dict[int, list[Any]]) -> None:
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
        """Every piece of output ``part`` (by input, in input order), removed from here."""
        where = (exchange, part)
        with self._lock:
            if where in self._taken:
                raise PiecesGone(f"output {part} of {exchange} was assembled here already")
            self._taken.add(where)
            held = self._memory.pop(where, {})
            self.memory_bytes -= self._sizes.pop(where, 0)
            on_disk = self._on_disk.pop(where, None)
        pieces = dict(held)
        if on_disk:
            path = self._path(where)
            with open(path, "rb") as f:
                for source, frames in _read_pieces(f):
                    pieces.setdefault(source, frames)
            os.unlink(path)
        return sorted(pieces.items())

    def forget(self, exchange: str) -> None:
        """Drop whatever is left of ``exchange`` (it restarted, or was abandoned)."""
        with self._lock:
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
        out.append((source, [bytearray(f.read(n)) for n in lengths]))
