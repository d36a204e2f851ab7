"""``span(*tags)``: name a part of a computation, as dask's ``distributed.span``.

Tasks submitted inside ``with span("load"):`` (``submit``, ``map``, ``compute`` and
``persist`` of dask collections) carry the span in their spec -- ``[span id, *names]``, the
names of every enclosing span first -- so the worker that runs them knows it without
asking anyone: it adds their count, time and bytes to the span's totals in Redis
(``rdist.store.diagnostics.Spans``) and tags their task-stream rows, which is how the
performance report and the dashboard group by span. Nested spans get ids of their own;
a parent's totals are the sums over the spans whose names start with its names.

The current span lives in a context variable: threads and asyncio tasks see their own.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["current", "span"]

#: ``[span id, *names]`` of the innermost open span, or None
_current: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "rdist_span", default=None
)


@contextmanager
def span(*tags: str) -> Iterator[str]:
    """Tag the tasks submitted inside with ``tags`` (after the enclosing spans' tags);
    yields the span's id."""
    if not tags or not all(isinstance(t, str) and t for t in tags):
        raise ValueError(f"span() takes one or more non-empty names, got {tags!r}")
    outer = _current.get()
    ident = uuid.uuid4().hex
    token = _current.set([ident, *(outer[1:] if outer else []), *tags])
    try:
        yield ident
    finally:
        _current.reset(token)


def current() -> list[str] | None:
    """``[span id, *names]`` of the span open here, or None."""
    return _current.get()
