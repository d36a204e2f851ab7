"""A worker's data in memory and on disk, and the memory limit's fractions.

:class:`SpillBuffer` is the worker's ``data`` mapping. Values live in memory in
least-recently-used order; when the bytes in memory pass the *target* fraction of the
memory limit, the least recently used ones are written to a spill directory and read back,
transparently, when a task or a peer needs them. Serialized frames are kept beside a value
once made (checking a large result is picklable, or a first transfer), so a value is
pickled at most once: transfers and spilling reuse them (for numpy arrays they are views,
free). Peers are served spilled data straight from disk, without unpickling it.

:class:`MemoryMonitor` watches the process's resident memory: past *spill* it spills
until back under *target*; past *pause* the worker stops taking tasks until it is below
again. Past *terminate* the nanny restarts the worker (:mod:`rdist.worker.nanny`).
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from rdist.comm.buffers import host_buffer
from rdist.protocol import serialize
from rdist.settings import BY_NAME

log = logging.getLogger("rdist.worker")

_MAGIC = b"RDS1"
_M_TRIM_THRESHOLD = -1  #: glibc's mallopt parameter
#: Cached frames whose pickle stream (frame 0) is larger serve one transfer or spill, then
#: go: they duplicate the value's memory (numpy arrays' frames are views, nearly free).
CACHE_KEEP_BYTES = 1 << 20


@dataclass(frozen=True)
class MemoryFractions:
    """Fractions of the memory limit; 0 turns a threshold off (as ``False`` in dask)."""

    #: bytes held in memory above which data spills (managed bytes)
    target: float = BY_NAME["worker.memory_target"].default
    #: process memory above which data spills until back under target
    spill: float = BY_NAME["worker.memory_spill"].default
    #: process memory above which the worker takes no new tasks
    pause: float = BY_NAME["worker.memory_pause"].default
    #: process memory above which the nanny restarts the worker
    terminate: float = BY_NAME["worker.memory_terminate"].default

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not 0 <= value <= 1:
                raise ValueError(f"memory fraction {f.name} must be between 0 and 1, not {value}")

    @classmethod
    def from_env(cls, **overrides: float | None) -> MemoryFractions:
        """The configuration's ``worker.memory_<name>`` (defaults < dask's fractions < YAML <
        ``RDIST_WORKER__MEMORY_<NAME>`` or ``RDIST_MEMORY_<NAME>``), then non-None
        ``overrides``."""
        from rdist.config import load_config

        config = load_config()
        values = {f.name: float(config.get(f"worker.memory_{f.name}")) for f in fields(cls)}
        values.update({k: float(v) for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(slots=True)
class _Spilled:
    path: str
    nbytes: int  #: the value's size in memory (what the scheduler knows)
    disk: int  #: bytes in the file


class SpillBuffer(MutableMapping[str, Any]):
    """key -> value, in memory (LRU) or spilled to ``directory``; thread-safe."""

    def __init__(self, target: int = 0, directory: str | None = None) -> None:
        self.target = target  #: spill when bytes in memory exceed this (0: never by size)
        self._base = directory
        self._dir: str | None = None
        self._lock = threading.RLock()
        self.fast: OrderedDict[str, Any] = OrderedDict()
        self.slow: dict[str, _Spilled] = {}
        self.nbytes: dict[str, int] = {}  #: every key's size in memory, spilled or not
        self.frames_cache: dict[str, list[Any]] = {}
        self.fast_bytes = 0  #: bytes of the values in memory
        self.cache_bytes = 0  #: bytes of cached pickle streams (out-of-band buffers are views)
        self.spilled_bytes = 0  #: bytes on disk
        self.unspillable: set[str] = set()
        self._spilling: set[str] = set()
        self._names = itertools.count()
        self.spill_count = self.unspill_count = 0

    # -- the mapping -------------------------------------------------------------------------
    def set(self, key: str, value: Any, nbytes: int, frames: list[Any] | None = None) -> None:
        with self._lock:
            self._drop(key)
            self.fast[key] = value
            self.nbytes[key] = nbytes
            self.fast_bytes += nbytes
            if frames is not None:
                self._cache(key, frames)
        if self.target:  # (checked here: this runs once per task)
            self.evict_to_target()

    def __setitem__(self, key: str, value: Any) -> None:
        from rdist.worker.sizeof import sizeof

        self.set(key, value, sizeof(value))

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            if key in self.fast:
                self.fast.move_to_end(key)
                return self.fast[key]
            entry = self.slow.get(key)
        if entry is None:
            raise KeyError(key)
        frames = _read(entry.path)
        value = serialize.loads(frames)
        with self._lock:
            if key in self.fast:  # another thread read it back first
                return self.fast[key]
            if self.slow.get(key) is not entry:  # dropped meanwhile: the caller still gets it
                return value
            del self.slow[key]
            self.spilled_bytes -= entry.disk
            self.fast[key] = value
            self.fast_bytes += entry.nbytes
            self._cache(key, frames)
            self.unspill_count += 1
        _remove(entry.path)
        self.evict_to_target()
        return value

    def __delitem__(self, key: str) -> None:
        with self._lock:
            if key not in self.nbytes:
                raise KeyError(key)
            self._drop(key)

    def discard(self, key: str) -> None:
        """Forget ``key`` if present, without reading it back from disk."""
        with self._lock:
            self._drop(key)

    def discard_many(self, keys: list[str]) -> None:
        """:meth:`discard` of each of ``keys``, under one acquisition of the lock."""
        with self._lock:
            for key in keys:
                self._drop(key)

    def pop(self, key: str, *default: Any) -> Any:
        try:
            value = self[key]
        except KeyError:
            if default:
                return default[0]
            raise
        self.discard(key)
        return value

    def clear(self) -> None:
        with self._lock:
            for key in list(self.nbytes):
                self._drop(key)

    def _drop(self, key: str) -> None:
        nbytes = self.nbytes.pop(key, None)
        if nbytes is None:
            return
        self._uncache(key)
        self.unspillable.discard(key)
        if key in self.fast:
            del self.fast[key]
            self.fast_bytes -= nbytes
        entry = self.slow.pop(key, None)
        if entry is not None:
            self.spilled_bytes -= entry.disk
            _remove(entry.path)

    def __contains__(self, key: object) -> bool:
        return key in self.nbytes

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self.nbytes))

    def __len__(self) -> int:
        return len(self.nbytes)

    @property
    def memory_bytes(self) -> int:
        """Bytes this buffer holds in memory: values and cached pickle streams."""
        return self.fast_bytes + self.cache_bytes

    # -- serialized forms --------------------------------------------------------------------
    def _cache(self, key: str, frames: list[Any]) -> None:
        self._uncache(key)
        self.frames_cache[key] = frames
        self.cache_bytes += serialize.frame_nbytes(frames[0]) if frames else 0

    def _uncache(self, key: str) -> list[Any] | None:
        frames = self.frames_cache.pop(key, None)
        if frames:
            self.cache_bytes -= serialize.frame_nbytes(frames[0])
        return frames

    def frames(self, key: str) -> list[Any]:
        """Serialized frames of ``key``: cached, freshly pickled, or read from disk as they are."""
        with self._lock:
            cached = self.frames_cache.get(key)
            if cached is not None:
                if cached and serialize.frame_nbytes(cached[0]) > CACHE_KEEP_BYTES:
                    self._uncache(key)
                return cached
            if key in self.fast:
                value = self.fast[key]
                entry = None
            else:
                entry = self.slow.get(key)
                if entry is None:
                    raise KeyError(key)
        if entry is not None:
            return _read(entry.path)
        frames = serialize.dumps(value)
        if frames and serialize.frame_nbytes(frames[0]) <= CACHE_KEEP_BYTES:
            with self._lock:
                if self.fast.get(key) is value:
                    self._cache(key, frames)
        return frames

    def frames_of(self, keys: list[str]) -> dict[str, list[Any]]:
        out = {}
        for key in keys:
            try:
                out[key] = self.frames(key)
            except KeyError:
                continue
            except serialize.SerializationError as exc:
                log.error("cannot serialize %r for a transfer: %s", key, exc)
        return out

    def size_of(self, keys: list[str]) -> int:
        with self._lock:
            return sum(self.nbytes.get(k, 0) for k in keys)

    # -- spilling ----------------------------------------------------------------------------
    @property
    def directory(self) -> str:
        if self._dir is None:
            base = self._base
            if base is not None:
                os.makedirs(base, exist_ok=True)
            self._dir = tempfile.mkdtemp(prefix="rdist-spill-", dir=base)
        return self._dir

    def evict_to_target(self) -> None:
        if self.target:
            while self.memory_bytes > self.target and self.evict():
                pass

    def evict(self) -> int:
        """Write the least recently used value to disk; its size, or 0 if nothing could go."""
        with self._lock:
            key = next(
                (k for k in self.fast if k not in self.unspillable and k not in self._spilling),
                None,
            )
            if key is None:
                return 0
            value, frames = self.fast[key], self.frames_cache.get(key)
            self._spilling.add(key)
        try:
            if frames is None:
                frames = serialize.dumps(value)
            path = os.path.join(self.directory, f"{next(self._names)}.spill")
            disk = _write(path, frames)
        except (serialize.SerializationError, OSError) as exc:
            log.error("cannot spill %r to disk, keeping it in memory: %s", key, exc)
            with self._lock:
                self._spilling.discard(key)
                if key in self.fast:
                    self.unspillable.add(key)
            return self.nbytes.get(key, 0) or 1  # others may still go
        with self._lock:
            self._spilling.discard(key)
            if self.fast.get(key) is not value:  # dropped or replaced while we wrote
                _remove(path)
                return 1
            nbytes = self.nbytes[key]
            del self.fast[key]
            self._uncache(key)
            self.fast_bytes -= nbytes
            self.slow[key] = _Spilled(path, nbytes, disk)
            self.spilled_bytes += disk
            self.spill_count += 1
        return nbytes

    def close(self) -> None:
        with self._lock:
            self.fast.clear()
            self.slow.clear()
            self.nbytes.clear()
            self.frames_cache.clear()
            self.fast_bytes = self.spilled_bytes = self.cache_bytes = 0
            directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _write(path: str, frames: list[Any]) -> int:
    views = [memoryview(f).cast("B") for f in frames]
    head = msgpack.packb([v.nbytes for v in views])
    with open(path, "wb") as fh:
        fh.write(_MAGIC + len(head).to_bytes(4, "little") + head)
        for view in views:
            fh.write(view)
    return 8 + len(head) + sum(v.nbytes for v in views)


def _read(path: str) -> list[Any]:
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if prefix[:4] != _MAGIC:
            raise serialize.SerializationError(f"corrupt spill file {path}")
        lengths = msgpack.unpackb(fh.read(int.from_bytes(prefix[4:], "little")))
        frames = []
        for i, n in enumerate(lengths):
            buf = host_buffer(n) if i else bytearray(n)
            if fh.readinto(memoryview(buf).cast("B")) != n:
                raise serialize.SerializationError(f"truncated spill file {path}")
            frames.append(buf)
    return frames


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- watching the process's memory ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    spill_bytes: int  #: managed bytes to spill now (0: none)
    paused: bool
    terminate: bool


def assess(rss: int, limit: int, fractions: MemoryFractions) -> Assessment:
    """What the process's resident memory calls for (pure, for tests)."""
    if limit <= 0:
        return Assessment(0, False, False)
    spill = 0
    if fractions.spill and rss > fractions.spill * limit:
        spill = int(rss - (fractions.target or fractions.spill) * limit)
    return Assessment(
        spill,
        bool(fractions.pause and rss > fractions.pause * limit),
        bool(fractions.terminate and rss > fractions.terminate * limit),
    )


def process_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class MemoryMonitor:
    """Checks resident memory every ``interval`` seconds: spills, pauses and resumes."""

    def __init__(
        self,
        buffer: SpillBuffer,
        limit: int,
        fractions: MemoryFractions,
        on_pause: Callable[[bool], None],
        rss: Callable[[], int] = process_rss,
        interval: float = 0.1,
    ) -> None:
        self.buffer = buffer
        self.limit = limit
        self.fractions = fractions
        self.on_pause = on_pause
        self.rss = rss
        self.interval = interval
        self.paused = False
        self._warned = False

    def check(self) -> None:
        rss = self.rss()
        verdict = assess(rss, self.limit, self.fractions)
        if verdict.spill_bytes:
            from rdist.comm.buffers import POOL

            if POOL.trim(0):  # free receive buffers go first: they hold no data
                rss = self.rss()
                verdict = assess(rss, self.limit, self.fractions)
            freed = 0
            while freed < verdict.spill_bytes:
                got = self.buffer.evict()
                if not got:
                    break
                freed += got
            rss = self.rss()
            verdict = assess(rss, self.limit, self.fractions)
        if verdict.paused != self.paused:
            self.paused = verdict.paused
            log.warning(
                "worker memory %s: %d MB of %d MB limit",
                "high, pausing" if self.paused else "back under the pause threshold, resuming",
                rss >> 20,
                self.limit >> 20,
            )
            self.on_pause(self.paused)
        if verdict.terminate and not self._warned:
            self._warned = True
            log.warning(
                "worker memory %d MB is past the terminate fraction of its %d MB limit; "
                "a nanny would restart it",
                rss >> 20,
                self.limit >> 20,
            )

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # the monitor must outlive one failed check
                log.exception("memory check failed")


def return_freed_memory() -> None:
    """Make glibc give freed memory back to the system at once (for a worker process).

    By default glibc keeps freed heap memory for reuse and raises its mmap threshold as
    large blocks come and go, so a worker that once held (or moved) a few hundred MB of
    1 MB arrays stays that large after it dropped them -- dask's nanny sets
    ``MALLOC_TRIM_THRESHOLD_=65536`` for the same reason. Setting the trim threshold also
    pins the mmap threshold, so large blocks are unmapped when freed.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_TRIM_THRESHOLD, 64 * 1024)
    except (OSError, AttributeError):
        pass
