"""Durations as dask writes them: seconds, or text such as ``"1s"``, ``"500ms"``, ``"2 min"``.

dask's coordination primitives, actors and plugins take ``timeout="1s"`` as readily as
``timeout=1``; its documented examples use both. :func:`seconds` turns either into a float
(or None, for "no limit"), refusing what it cannot read with a message naming the value.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {
    "us": 1e-6,
    "microsecond": 1e-6,
    "microseconds": 1e-6,
    "ms": 1e-3,
    "millisecond": 1e-3,
    "milliseconds": 1e-3,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_TEXT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def seconds(value: object, what: str = "timeout") -> float | None:
    """``value`` in seconds: a number, a ``timedelta``, text with a unit (``"1.5s"``; a bare
    number is seconds) or None (None stays None). Negative or unreadable values raise
    ValueError naming ``what``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number of seconds or text like '1s', not {value!r}")
    if isinstance(value, timedelta):
        out = value.total_seconds()
    elif isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        match = _TEXT.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _UNITS and unit != "":
            raise ValueError(
                f"{what} {value!r} is not a duration; write seconds (1.5) or text like "
                "'500ms', '1s', '2min'"
            )
        out = float(match.group(1)) * _UNITS.get(unit, 1.0)
    else:
        raise ValueError(
            f"{what} must be a number of seconds or text like '1s', not {type(value).__name__}"
        )
    if math.isnan(out) or out < 0:
        raise ValueError(f"{what} must not be negative, not {value!r}")
    return out
