"""Messages are packed on a packer kept per thread (rdist.protocol.packing).

A worker pins glibc's mmap threshold (it returns freed memory at once); from then on the
256 KB buffer of every ``msgpack.packb`` is an mmap of its own, ~20 us for a message of
a few bytes, on every result's blob and every report.
"""

from __future__ import annotations

import threading

import msgpack
import pytest

from rdist.protocol import packing, serialize


@pytest.mark.parametrize(
    "obj",
    [[[57], [False]], {"k": [1, 2.5, None, b"\x00raw", "text"]}, list(range(1000)), "é" * 10],
)
def test_the_kept_packer_packs_as_msgpack_packb(obj: object) -> None:
    assert packing.packb(obj) == msgpack.packb(obj, use_bin_type=True)
    assert packing.packb(obj) == packing.packb(obj)  # (its buffer was reset)


def test_a_thread_packs_on_its_own_packer_and_keeps_it() -> None:
    packing.packb(1)
    mine = packing._local.packer
    packing.packb([1, 2])
    assert packing._local.packer is mine
    theirs: list[object] = []

    def other() -> None:
        packing.packb(2)
        theirs.append(packing._local.packer)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert theirs and theirs[0] is not mine


def test_a_failed_pack_leaves_the_packer_clean() -> None:
    with pytest.raises(TypeError):
        packing.packb([1, object()])
    assert packing.packb([3]) == msgpack.packb([3])


def test_a_large_message_does_not_leave_a_large_buffer_behind() -> None:
    big = b"x" * (packing.KEEP_BYTES + 1)
    packing.packb(1)
    assert packing.packb(big) == msgpack.packb(big)
    assert getattr(packing._local, "packer", None) is None  # dropped with its buffer
    assert packing.packb(1) == msgpack.packb(1)


def test_blobs_are_unchanged() -> None:
    for value in (None, 1, "x" * 100, list(range(100)), b"y" * 10_000):
        blob = serialize.to_blob(value)
        assert serialize.from_blob(blob) == value
        frames = serialize.dumps(value)
        header = msgpack.packb([[len(frames[0])], [False]])
        size = len(header).to_bytes(4, "little")
        assert blob == b"".join([serialize.BLOB_MAGIC, size, header, frames[0]])
