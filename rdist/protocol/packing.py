"""``msgpack.packb`` without its buffer per call: one packer per thread, kept.

``msgpack.packb(obj)`` makes a ``Packer``, whose buffer starts at 256 KB. Under glibc's
default allocator that is cheap (~1 us), but a worker pins the allocator's mmap threshold
(``rdist.worker.memory.return_freed_memory``, as dask's nanny does with
``MALLOC_TRIM_THRESHOLD_``), and from then on every such buffer is an ``mmap`` and an
``munmap`` of its own: ~20 us for a ten-byte message, measured on this machine, on every
result's blob header and every report a worker sends. A packer kept per thread allocates
its buffer once.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

#: A packer whose last message was larger than this is dropped with it: a thread keeps
#: no buffer the size of the largest message it ever packed.
KEEP_BYTES = 1 << 20

_local = threading.local()


def packb(obj: Any) -> bytes:
    """``msgpack.packb(obj, use_bin_type=True)``, on this thread's packer."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    packed: bytes = packer.pack(obj)  # (resets the buffer, also when packing fails)
    if len(packed) > KEEP_BYTES:
        _local.packer = None
    return packed
