"""Task keys: what a user may name a task, and the string it travels as.

dask's keys are ``str``, ``int``, ``float`` or tuples of those, nested as deep as you like
(``("x", 0)``, ``("sum", ("x", 0), 1)``). rdist accepts the same (``dask.core.iskey``), and
refuses anything else at the call. On the wire, in Redis hashes and on the scheduler a key
is a string, so every legal key has one string form -- its *wire name* -- and the wire
name gives the key back:

- a tuple, int or float key travels as its literal, ``repr``: ``("x", 1)`` as
  ``"('x', 1)"``, ``123`` as ``"123"``;
- a string key travels as itself, unless it would read back as another key (it is, to
  the character, the literal of a tuple, a number or a quoted string): then as its own
  literal -- the string ``"('x', 1)"`` as ``"\\"('x', 1)\\""``. Keys rdist makes
  (``inc-<hash>``) and almost every user's never look like that.

``user_key(wire_name(k)) == k`` for every legal key (and the string types are kept), so
two different keys never share a task, and a future's ``key`` is what the user gave.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from rdist.protocol.wire.base import MAX_NAME_CHARS

#: First characters of the literals a wire name may be: anything else is a plain str key.
_LITERAL_START = frozenset("('\"-+.0123456789")
_ATOMS = (str, int, float)


def is_key(key: Any) -> bool:
    """A legal key: a str, int or finite float (not a bool), or a tuple of keys."""
    kind = type(key)
    if kind is str or kind is int:
        return True
    if kind is float:
        return math.isfinite(key)
    if kind is tuple:
        return all(is_key(part) for part in key)
    return False


def wire_name(key: Any) -> str:
    """The string a legal key travels as (see the module doc); the key must be legal."""
    if type(key) is str:
        if not key or key[0] not in _LITERAL_START or _read_literal(key) is None:
            return key
        return repr(key)  # it reads as another key: quoted, it reads as itself
    return repr(key)


def user_key(name: str) -> Any:
    """The key a wire name stands for (inverse of :func:`wire_name`)."""
    if not name or name[0] not in _LITERAL_START:
        return name
    found = _read_literal(name)
    return name if found is None else found[0]


def _read_literal(name: str) -> tuple[Any] | None:
    """``(key,)`` when ``name`` is exactly the wire name of a key other than the string
    ``name`` itself -- the canonical literal of a tuple, number or quoted string -- else
    None."""
    try:
        value = ast.literal_eval(name)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not is_key(value) or value == name and type(value) is str:
        return None
    canonical = repr(value)
    if type(value) is str:
        # a quoted string: the name is its literal only if the string needs quoting
        return (value,) if canonical == name and _read_literal(value) is not None else None
    return (value,) if canonical == name else None


def check_key(key: Any, argument: str = "key") -> str:
    """The wire name of ``key``, or TypeError/ValueError naming ``argument`` and the fix."""
    if type(key) is str or is_key(key):
        name = wire_name(key)
        if not name or len(name) > MAX_NAME_CHARS:
            raise ValueError(
                f"{argument} must be 1 to {MAX_NAME_CHARS} characters long as a string, "
                f"not {len(name)}: {_short(key)}"
            )
        return name
    if type(key) is float:
        raise ValueError(f"{argument}={key!r}: a float key must be finite (not nan or inf)")
    if type(key) is tuple:
        bad = next(part for part in key if not is_key(part))
        raise TypeError(
            f"{argument}={key!r}: a tuple key may hold only str, int, float and tuples "
            f"of them (as dask's keys), not {type(bad).__name__} {bad!r}"
        )
    raise TypeError(
        f"{argument} must be a dask key -- a str, an int, a float, or a tuple of those such "
        f"as ('x', 1) -- not {type(key).__name__} {key!r}"
    )


def _short(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 80 else text[:77] + "..."
