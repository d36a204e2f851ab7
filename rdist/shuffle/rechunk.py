"""The geometry of an array rechunk: which slice of an input chunk goes to which output
chunk, and where it lands there. Pure (numpy and the chunk sizes only), shared by the
transfer that splits and the unpack that assembles, so that both agree by construction.

Chunks are given as dask gives them: per axis, the sizes of its chunks (``((100, 100),
(50, 50, 50))``). Per axis, input chunk ``i`` covering ``[a, b)`` sends to every output
chunk ``j`` covering ``[c, d)`` that overlaps it the span ``[max(a, c), min(b, d))``; an
n-dimensional piece is the product of one such span per axis. An output chunk of zero
width along an axis still gets a (zero-width) span from the input chunk where it starts,
so every output chunk has at least one piece, and with it the dtype.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from itertools import product
from typing import Any, NamedTuple

Chunks = tuple[tuple[int, ...], ...]
Index = tuple[int, ...]


class Span(NamedTuple):
    """The part of one input chunk bound for one output chunk, along one axis."""

    target: int  #: output chunk along this axis
    start: int  #: first element, within the input chunk
    stop: int  #: one past the last, within the input chunk
    offset: int  #: where ``start`` lands, within the output chunk


Source = tuple[int, Span]  #: an input chunk (along one axis) and its span


def _bounds(sizes: tuple[int, ...]) -> list[int]:
    out = [0]
    for size in sizes:
        out.append(out[-1] + size)
    return out


@lru_cache(maxsize=256)
def axis_spans(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[tuple[Span, ...], ...]:
    """For every input chunk of one axis, its spans (by output chunk, in order)."""
    if sum(old) != sum(new):
        raise ValueError(f"chunks {old} and {new} do not cover the same length")
    a, c = _bounds(old), _bounds(new)
    spans: list[list[Span]] = [[] for _ in old]
    i = 0
    for j in range(len(new)):
        lo, hi = c[j], c[j + 1]
        if lo == hi:  # a zero-width output chunk: from the input chunk where it starts
            k = _chunk_at(a, old, lo)
            spans[k].append(Span(j, lo - a[k], lo - a[k], 0))
            continue
        while a[i + 1] <= lo:
            i += 1
        k = i
        while k < len(old) and a[k] < hi:
            start, stop = max(a[k], lo), min(a[k + 1], hi)
            if stop > start:
                spans[k].append(Span(j, start - a[k], stop - a[k], start - lo))
            k += 1
    return tuple(tuple(s) for s in spans)


def _chunk_at(bounds: list[int], sizes: tuple[int, ...], position: int) -> int:
    """The non-empty input chunk holding ``position`` (the last one for the very end)."""
    for k, size in enumerate(sizes):
        if size and bounds[k] <= position < bounds[k + 1]:
            return k
    return max(k for k, size in enumerate(sizes) if size) if any(sizes) else len(sizes) - 1


@lru_cache(maxsize=256)
def _sources(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[tuple[Source, ...], ...]:
    """For every output chunk of one axis: the input chunks sending to it, with their spans."""
    by_target: list[list[Source]] = [[] for _ in new]
    for i, spans in enumerate(axis_spans(old, new)):
        for span in spans:
            by_target[span.target].append((i, span))
    return tuple(tuple(s) for s in by_target)


def shape_of(chunks: Chunks, index: Index) -> tuple[int, ...]:
    return tuple(axis[i] for axis, i in zip(chunks, index, strict=True))


def grid(chunks: Chunks) -> tuple[int, ...]:
    """Chunks per axis."""
    return tuple(len(axis) for axis in chunks)


def linear(index: Index, chunks: Chunks) -> int:
    """The chunk's number in C order (the exchange numbers partitions with ints)."""
    n = 0
    for i, count in zip(index, grid(chunks), strict=True):
        if not 0 <= i < count:
            raise IndexError(f"chunk {index} is outside a grid of {grid(chunks)}")
        n = n * count + i
    return n


def unlinear(n: int, chunks: Chunks) -> Index:
    out: list[int] = []
    for count in reversed(grid(chunks)):
        n, i = divmod(n, count)
        out.append(i)
    return tuple(reversed(out))


def split(data: Any, source: Index, old: Chunks, new: Chunks) -> dict[Index, Any]:
    """Input chunk ``source`` cut into the pieces every output chunk needs (views of
    ``data``), by output chunk."""
    _check_ndim(old, new)
    expected = shape_of(old, source)
    if tuple(data.shape) != expected:
        raise ValueError(f"input chunk {source} has shape {data.shape}, expected {expected}")
    per_axis = [axis_spans(o, n)[i] for o, n, i in zip(old, new, source, strict=True)]
    out: dict[Index, Any] = {}
    for spans in product(*per_axis):
        target = tuple(s.target for s in spans)
        out[target] = data[tuple(slice(s.start, s.stop) for s in spans)]
    return out


def piece(data: Any, source: Index, target: Index, old: Chunks, new: Chunks) -> Any:
    """The one piece of input chunk ``source`` bound for output chunk ``target`` (a view)."""
    _check_ndim(old, new)
    region = []
    for o, n, i, j in zip(old, new, source, target, strict=True):
        span = _span_index(o, n).get((i, j))
        if span is None:
            raise ValueError(f"input chunk {source} sends nothing to output chunk {target}")
        region.append(slice(span.start, span.stop))
    return data[tuple(region)]


@lru_cache(maxsize=256)
def _span_index(old: tuple[int, ...], new: tuple[int, ...]) -> dict[tuple[int, int], Span]:
    """(input chunk, output chunk) -> span, along one axis."""
    spans = axis_spans(old, new)
    return {(i, s.target): s for i, per_input in enumerate(spans) for s in per_input}


def sources_of(target: Index, old: Chunks, new: Chunks) -> dict[Index, tuple[slice, ...]]:
    """The input chunks sending to output chunk ``target``, each with the region of the
    output chunk its piece fills."""
    _check_ndim(old, new)
    per_axis = [_sources(o, n)[j] for o, n, j in zip(old, new, target, strict=True)]
    out: dict[Index, tuple[slice, ...]] = {}
    for combo in product(*per_axis):
        source = tuple(i for i, _ in combo)
        out[source] = tuple(slice(s.offset, s.offset + s.stop - s.start) for _, s in combo)
    return out


def assemble(target: Index, pieces: dict[Index, Any], old: Chunks, new: Chunks) -> Any:
    """Output chunk ``target`` from its pieces (by input chunk): every expected piece must
    be there, each of the shape of its region, none else."""
    expected = sources_of(target, old, new)
    missing = set(expected) - set(pieces)
    extra = set(pieces) - set(expected)
    if missing or extra:
        raise ValueError(
            f"output chunk {target}: pieces of input chunks {sorted(missing)} missing, "
            f"{sorted(extra)} not expected"
        )
    shape = shape_of(new, target)
    for source, region in expected.items():
        want = tuple(r.stop - r.start for r in region)
        if tuple(pieces[source].shape) != want:
            raise ValueError(
                f"output chunk {target}: the piece of input chunk {source} has shape "
                f"{pieces[source].shape}, expected {want}"
            )
    if len(pieces) == 1:  # one piece is the whole chunk: no copy
        (piece,) = pieces.values()
        return piece
    np: Any = importlib.import_module("numpy")  # imported here: the client imports this module
    first = next(iter(pieces.values()))
    out = np.empty(shape, dtype=first.dtype)
    for source, region in expected.items():
        out[region] = pieces[source]
    return out


def _check_ndim(old: Chunks, new: Chunks) -> None:
    if len(old) != len(new):
        raise ValueError(f"chunks of {len(old)} and {len(new)} dimensions")
