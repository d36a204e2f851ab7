"""``rdist.print`` and ``rdist.warn`` (dask's ``distributed.print`` / ``distributed.warn``):
called in a task, they print or warn on the worker as the builtins do, and put the same
on the topic ``print`` / ``warn``, which every client shows (:mod:`rdist.client.logs`).
The event rides the worker's next log batch (:mod:`rdist.logbuffer`): a task printing in
a loop costs no Redis round trip per line. Outside a task they are the builtins.
"""

from __future__ import annotations

import builtins
import sys
import time
import warnings
from typing import Any

from rdist.worker.context import get_worker

__all__ = ["print", "warn"]


def _current_worker() -> Any:
    try:
        return get_worker()
    except ValueError:
        return None


def print(*args: Any, **kwargs: Any) -> None:  # noqa: A001  (dask's distributed.print)
    """``print`` on the worker running the task, and on every client of the cluster."""
    msg: dict[str, Any] = {"args": [a if isinstance(a, str) else str(a) for a in args]}
    for name in ("sep", "end", "flush"):
        if name in kwargs:
            msg[name] = kwargs[name]
    if kwargs.get("file") is not None:
        stream = kwargs["file"]
        if stream not in (sys.stdout, sys.stderr):
            raise TypeError(
                f"rdist.print(file={stream!r}): a remote print goes to sys.stdout or "
                "sys.stderr only (or None)"
            )
        msg["file"] = 1 if stream is sys.stdout else 2
    worker = _current_worker()
    if worker is not None:
        worker.logs.topic("print", msg, time.time())
    builtins.print(*args, **kwargs)


def warn(
    message: Any, category: type[Warning] | None = None, stacklevel: int = 1, source: Any = None
) -> None:
    """``warnings.warn`` on the worker running the task, and on every client."""
    if category is None:
        category = message.__class__ if isinstance(message, Warning) else UserWarning
    worker = _current_worker()
    if worker is not None:
        kind = f"{category.__module__}:{category.__qualname__}"
        worker.logs.topic("warn", {"message": str(message), "category": kind}, time.time())
    warnings.warn(message, category, stacklevel + 1, source)
