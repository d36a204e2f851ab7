"""Cutting a frame into pieces by output partition, and putting pieces back together.

A frame whose columns and index are plain numpy arrays (the common case: numbers, bools,
datetimes) travels as :class:`Columns` -- one contiguous slice per column of the rows
sorted by output partition -- so that pickling sends the slices out of band without a
copy, and assembling is one ``numpy.concatenate`` per column instead of concatenating
many small DataFrames. Any other frame (extension dtypes, a MultiIndex) travels as
DataFrame pieces and is assembled with ``pandas.concat``.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple


class Columns(NamedTuple):
    """One piece of a frame of numpy columns."""

    names: list[Any]
    arrays: list[Any]
    index: Any  #: the index's values
    index_name: Any


def cut(df: Any, column: str, drop: bool) -> dict[int, Any]:
    """``df`` cut by the output partition in ``column`` (rows keep their order within a
    piece); ``drop`` leaves that column out of the pieces."""
    np: Any = importlib.import_module("numpy")
    parts = df[column].to_numpy()
    if not len(parts):
        return {}
    order = np.argsort(parts, kind="stable")
    ordered = parts[order]
    starts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    bounds = [0, *starts.tolist(), len(ordered)]
    spans = [(int(ordered[a]), a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    if _plain(df, np):  # the columns gathered one by one: no copy of the whole frame first
        names = [c for c in df.columns if not (drop and c == column)]
        arrays = [df[name].to_numpy().take(order) for name in names]
        index = df.index.to_numpy().take(order)
        return {
            p: Columns(names, [x[a:b] for x in arrays], index[a:b], df.index.name)
            for p, a, b in spans
        }
    taken = (df.drop(columns=column) if drop else df).iloc[order]
    return {p: taken.iloc[a:b] for p, a, b in spans}


def _plain(df: Any, np: Any) -> bool:
    pd: Any = importlib.import_module("pandas")
    if isinstance(df.index, pd.MultiIndex) or not isinstance(df.index.dtype, np.dtype):
        return False
    if df.columns.has_duplicates:
        return False
    return all(isinstance(t, np.dtype) and t.kind != "O" for t in df.dtypes)


def assemble(pieces: list[Any], meta: Any) -> Any:
    """One frame from the pieces of an output partition (``meta``'s empty frame if none)."""
    if not pieces:
        return meta.iloc[:0].copy()
    pd: Any = importlib.import_module("pandas")
    if all(isinstance(p, Columns) for p in pieces):
        np: Any = importlib.import_module("numpy")
        first = pieces[0]
        data = {
            name: np.concatenate([p.arrays[i] for p in pieces]) if len(pieces) > 1 else arr
            for i, (name, arr) in enumerate(zip(first.names, first.arrays, strict=True))
        }
        values = np.concatenate([p.index for p in pieces]) if len(pieces) > 1 else first.index
        index = pd.Index(values, name=first.index_name)
        return pd.DataFrame(data, index=index, columns=first.names, copy=False)
    frames = [_frame(p, pd) if isinstance(p, Columns) else p for p in pieces]
    return frames[0] if len(frames) == 1 else pd.concat(frames)


def _frame(piece: Columns, pd: Any) -> Any:
    index = pd.Index(piece.index, name=piece.index_name)
    data = dict(zip(piece.names, piece.arrays, strict=True))
    return pd.DataFrame(data, index=index, columns=piece.names)
