"""User data: pickle protocol 5 with out-of-band buffers, lz4 where it pays.

A serialized object is a list of frames: frame 0 is the pickle stream, the others are the
raw buffers (numpy arrays travel without copies). ``to_blob``/``from_blob`` pack frames into
one bytes object for storage in Redis.

Blob layout: magic ``RD1``, the header's length (4 bytes, little endian), the msgpack
header ``[frame lengths, per-frame compression flags]``, then the frames.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle
import lz4.frame
import msgpack

from rdist.protocol.packing import packb

_MAGIC = b"RD1"
BLOB_MAGIC = _MAGIC  #: how every blob of :func:`to_blob` starts
#: Frames smaller than this are never compressed: lz4's overhead outweighs the gain.
_COMPRESS_MIN = 64 * 1024
#: A frame is sent compressed only when lz4 shrinks a sample below this ratio.
_COMPRESS_RATIO = 0.7


class SerializationError(TypeError):
    """An object that could not be pickled or unpickled."""


def dumps(obj: Any, hook: Callable[[Any], Any] | None = None) -> list[memoryview | bytes]:
    """Pickle ``obj``; large buffers stay out of band as memoryviews (no copy).

    ``hook(o)`` may return a reduce tuple for objects it pickles its own way (None for
    the others): graph nodes use it to turn embedded futures into dependencies."""
    buffers: list[pickle.PickleBuffer] = []
    try:
        if hook is None:
            head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        else:
            head = _dumps_with(pickle.Pickler, obj, hook, buffers)
        if _MAIN in head:  # names in a script's __main__ do not exist on workers: by value
            raise pickle.PicklingError("refers to __main__")
    except Exception:
        buffers = []
        try:
            if hook is None:
                head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
            else:
                head = _dumps_with(cloudpickle.Pickler, obj, hook, buffers)
        except Exception as exc:
            raise SerializationError(f"cannot serialize {type(obj).__name__}: {exc}") from exc
    return [head, *[b.raw() for b in buffers]] if buffers else [head]


_MAIN = b"__main__"


def _dumps_with(base: type, obj: Any, hook: Callable[[Any], Any], buffers: list[Any]) -> bytes:
    class _Pickler(base):  # type: ignore[misc]
        def reducer_override(self, o: Any) -> Any:
            reduced = hook(o)
            if reduced is not None:
                return reduced
            parent = getattr(super(), "reducer_override", None)
            return parent(o) if parent is not None else NotImplemented

    out = io.BytesIO()
    _Pickler(out, protocol=5, buffer_callback=buffers.append).dump(obj)
    return out.getvalue()


def loads(frames: list[Any]) -> Any:
    try:
        return pickle.loads(frames[0], buffers=frames[1:])
    except Exception as exc:
        raise SerializationError(f"cannot deserialize: {exc}") from exc


def dumps_function(func: Any) -> bytes:
    try:
        pickled: bytes = cloudpickle.dumps(func, protocol=5)
        return pickled
    except Exception as exc:
        raise SerializationError(f"cannot serialize function {func!r}: {exc}") from exc


def _maybe_compress(frame: Any) -> tuple[Any, bool]:
    size = frame_nbytes(frame)
    if size < _COMPRESS_MIN:
        return frame, False
    view = memoryview(frame).cast("B")
    sample = bytes(view[: 16 * 1024])
    if len(lz4.frame.compress(sample)) > _COMPRESS_RATIO * len(sample):
        return frame, False
    packed = lz4.frame.compress(view)
    return (packed, True) if len(packed) < _COMPRESS_RATIO * size else (frame, False)


def frame_nbytes(frame: Any) -> int:
    return len(frame) if isinstance(frame, (bytes, bytearray)) else memoryview(frame).nbytes


def encode_frames(frames: list[Any], compress: bool = True) -> tuple[bytes, list[Any]]:
    """Header + frames ready to write; compressed frames are replaced by their lz4 form."""
    out: list[Any] = []
    flags: list[bool] = []
    for frame in frames:
        data, packed = _maybe_compress(frame) if compress else (frame, False)
        out.append(data)
        flags.append(packed)
    header = packb([[frame_nbytes(f) for f in out], flags])
    return header, out


def decode_frames(header: bytes, frames: list[Any]) -> list[Any]:
    _, flags = msgpack.unpackb(header)
    return [
        lz4.frame.decompress(f, return_bytearray=True) if flag else f
        for f, flag in zip(frames, flags)
    ]


def to_blob(obj: Any, hook: Callable[[Any], Any] | None = None) -> bytes:
    """One bytes object (for Redis) holding a serialized object."""
    return frames_to_blob(dumps(obj, hook))


def frames_to_blob(frames: list[Any]) -> bytes:
    """``to_blob`` of what :func:`dumps` made (a caller that first looked at its size)."""
    if len(frames) == 1 and type(frames[0]) is bytes and len(frames[0]) < _COMPRESS_MIN:
        # one small frame, never compressed: what encode_frames gives, without its loop
        head = frames[0]
        header = packb([[len(head)], [False]])
        return b"".join([_MAGIC, len(header).to_bytes(4, "little"), header, head])
    header, out = encode_frames(frames)
    return b"".join([_MAGIC, len(header).to_bytes(4, "little"), header, *out])


def frames_size(frames: list[Any]) -> int:
    """Bytes of serialized frames (before compression)."""
    return sum(frame_nbytes(f) for f in frames)


def blob_to_frames(blob: bytes) -> list[Any]:
    if blob[:3] != _MAGIC:
        raise SerializationError("not an rdist data blob")
    view = memoryview(blob)
    try:
        hlen = int.from_bytes(view[3:7], "little")
        header = bytes(view[7 : 7 + hlen])
        lengths, flags = msgpack.unpackb(header)
        pos = 7 + hlen
        if len(lengths) == 1 and flags == [False] and pos + lengths[0] == len(view):
            return [view[pos:]]  # one frame, not compressed: the common small value
        frames = []
        for i, n in enumerate(lengths):
            # out-of-band buffers become writable copies: users expect to mutate arrays
            # they get back (blobs are small, so the copy is cheap)
            frames.append(view[pos : pos + n] if i == 0 else bytearray(view[pos : pos + n]))
            pos += n
        if pos != len(view):
            raise ValueError(f"frames need {pos} bytes, the blob has {len(view)}")
        if True not in flags:  # nothing compressed (every small blob): no second unpacking
            return frames
        return decode_frames(header, frames)
    except Exception as exc:  # truncated or corrupted: one error type for callers
        raise SerializationError(f"corrupt rdist data blob: {exc}") from exc


def from_blob(blob: bytes) -> Any:
    return loads(blob_to_frames(blob))
