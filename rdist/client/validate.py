"""The scheduling keywords of ``submit``, ``map``, ``get``, ``compute``, ``persist`` and
``scatter``, checked at the call.

What is legal is what dask.distributed accepts; what is not raises ``TypeError`` (a wrong
type) or ``ValueError`` (a wrong value) naming the argument -- before anything is sent, so
a bad call never reaches the scheduler and never travels in one message with good ones.
Each checker returns the value in the form the wire records carry.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral, Real
from typing import Any

from rdist.protocol.wire.base import MAX_NAME_CHARS

#: The ranges the wire records carry (``rdist.protocol.wire``): beyond them a task row
#: would be refused by the scheduler, so it is refused here, at the call.
MAX_PRIORITY = 1 << 62
MAX_RETRIES = 1 << 30
MAX_AMOUNT = 1e15


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def priority(value: Any, argument: str = "priority") -> int:
    """An int (higher runs first, as in dask); 0 when None."""
    if value is None:
        return 0
    if not _is_int(value):
        raise TypeError(
            f"{argument} must be an int (higher runs sooner, default 0), "
            f"not {type(value).__name__} {value!r}"
        )
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise ValueError(f"{argument}={value!r} is out of range (at most 2**62 either way)")
    return int(value)


def retries(value: Any, argument: str = "retries") -> int:
    """A non-negative int: how many more times a raising task is run; 0 when None."""
    if value is None:
        return 0
    if not _is_int(value):
        raise TypeError(
            f"{argument} must be a non-negative int (extra attempts), "
            f"not {type(value).__name__} {value!r}"
        )
    if value < 0:
        raise ValueError(f"{argument} must not be negative, got {value!r}")
    if value > MAX_RETRIES:
        raise ValueError(f"{argument}={value!r} is more than rdist allows (2**30)")
    return int(value)


def resources(value: Any, argument: str = "resources") -> dict[str, float] | None:
    """A mapping of resource name to a non-negative finite amount, e.g. ``{"GPU": 1}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{argument} must be a mapping of resource name to amount, e.g. {{'GPU': 1}}, "
            f"not {type(value).__name__} {value!r}"
        )
    out: dict[str, float] = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise TypeError(f"{argument}: resource names must be non-empty str, not {name!r}")
        if not isinstance(amount, Real) or isinstance(amount, bool):
            raise TypeError(
                f"{argument}[{name!r}] must be a number, not {type(amount).__name__} {amount!r}"
            )
        number = float(amount)  # a Real: int, float, numpy scalar, Fraction
        if not (math.isfinite(number) and 0 <= number <= MAX_AMOUNT):
            raise ValueError(
                f"{argument}[{name!r}] must be an amount from 0 to 1e15, got {amount!r}"
            )
        out[name] = int(number) if _is_int(amount) else number
    return out or None


def workers(value: Any, argument: str = "workers") -> list[str] | None:
    """One worker address or name, or an iterable of them; None (anywhere) when empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping)):
        raise TypeError(
            f"{argument} must be a worker address or name, or a list of them "
            f"(e.g. ['tcp://10.0.0.5:8788']), not {type(value).__name__} {value!r}"
        )
    found = list(value)
    for item in found:
        if not isinstance(item, str) or not item or len(item) > MAX_NAME_CHARS:
            raise TypeError(
                f"{argument} must hold worker addresses or names (str), "
                f"not {type(item).__name__} {item!r}"
            )
    return found or None


def flag(value: Any, argument: str) -> bool:
    """A yes/no keyword (``allow_other_workers``, ``pure``, ``broadcast``, ``hash``)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    raise TypeError(f"{argument} must be True or False, not {type(value).__name__} {value!r}")


def pure(value: Any) -> bool:
    """``pure=None`` means the default, True (as in dask)."""
    return True if value is None else flag(value, "pure")
