"""Cheap estimates of how many bytes a value holds (as ``dask.sizeof``, much smaller)."""

from __future__ import annotations

import sys
from typing import Any

#: Types whose size is just ``sys.getsizeof`` (checked first: most task results are these).
_PLAIN = frozenset({int, float, bool, str, bytes, bytearray, type(None), complex})


def sizeof(obj: Any, _depth: int = 0) -> int:
    if type(obj) in _PLAIN:
        return sys.getsizeof(obj)
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):  # numpy arrays, memoryviews and friends
        return nbytes + 100
    if isinstance(obj, (bytes, bytearray, str)):
        return sys.getsizeof(obj)
    if isinstance(obj, (list, tuple, set, frozenset)) and _depth < 2:
        items = list(obj)
        if len(items) > 20:  # sample large containers
            sample = items[:: max(1, len(items) // 20)][:20]
            return sys.getsizeof(obj) + sum(sizeof(x, _depth + 1) for x in sample) * len(
                items
            ) // len(sample)
        return sys.getsizeof(obj) + sum(sizeof(x, _depth + 1) for x in items)
    if isinstance(obj, dict) and _depth < 2:
        items = list(obj.items())[:20]
        per = sum(sizeof(k, _depth + 1) + sizeof(v, _depth + 1) for k, v in items) / max(
            1, len(items)
        )
        return sys.getsizeof(obj) + int(per * len(obj))
    try:
        memory_usage = getattr(obj, "memory_usage", None)  # pandas
        if callable(memory_usage) and hasattr(obj, "dtypes"):
            usage = memory_usage(deep=True)
            return int(usage.sum() if hasattr(usage, "sum") else usage)
    except Exception:
        pass
    try:
        return sys.getsizeof(obj)
    except Exception:
        return 64
