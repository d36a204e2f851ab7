"""Tracebacks across processes: a task's traceback travels as plain frames and comes back
as a real ``types.TracebackType`` (``future.traceback()``, ``traceback.print_tb``, pdb's
post-mortem see the task's files and lines).

A traceback object cannot be pickled. What it needs is a chain of frames, each with a code
object named like the remote function, in the remote file, stopped at the remote line: we
compile a tiny ``raise`` placed at that line, run it, and keep the frame it leaves behind.
Frames carry no locals: only where the code was.
"""

from __future__ import annotations

import types
from typing import Any

__all__ = ["Frame", "frames_of", "rebuild", "split_error", "valid_frames"]

#: (filename, line number, function name) of one frame
Frame = tuple[str, int, str]

#: frames kept, the innermost ones (a deep recursion would otherwise ship thousands)
MAX_FRAMES = 100


def frames_of(tb: types.TracebackType | None) -> list[Frame]:
    """The frames of ``tb``, outermost first (at most :data:`MAX_FRAMES`, innermost kept)."""
    frames: list[Frame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append((code.co_filename, tb.tb_lineno, code.co_name))
        tb = tb.tb_next
    return frames[-MAX_FRAMES:]


def split_error(loaded: Any) -> tuple[BaseException, str, list[Frame]] | None:
    """The exception, traceback text and frames of a loaded error blob -- the worker's
    ``(exception, text, frames)``, or ``(exception, text)`` of older workers --; None if
    ``loaded`` has neither shape."""
    if not (
        isinstance(loaded, tuple) and len(loaded) in (2, 3) and isinstance(loaded[0], BaseException)
    ):
        return None
    frames = valid_frames(loaded[2]) if len(loaded) == 3 else []
    return loaded[0], str(loaded[1] or ""), frames


def valid_frames(value: Any) -> list[Frame]:
    """``value`` as frames if it has their shape, else none (it came over the wire)."""
    if not isinstance(value, (list, tuple)):
        return []
    out: list[Frame] = []
    for item in value[-MAX_FRAMES:]:
        if (
            isinstance(item, (list, tuple))
            and len(item) == 3
            and isinstance(item[0], str)
            and type(item[1]) is int
            and 0 < item[1] < 10_000_000
            and isinstance(item[2], str)
        ):
            out.append((item[0], item[1], item[2]))
    return out


def rebuild(frames: list[Frame]) -> types.TracebackType | None:
    """A traceback object whose frames stand where ``frames`` say."""
    tb: types.TracebackType | None = None
    for filename, lineno, name in reversed(frames):
        stopped = _stopped_at(filename, lineno, name)
        if stopped is not None:
            tb = types.TracebackType(tb, stopped.tb_frame, stopped.tb_lasti, lineno)
    return tb


def _stopped_at(filename: str, lineno: int, name: str) -> types.TracebackType | None:
    """The traceback entry of a stand-in ``raise`` at ``lineno`` (its instruction offset
    is what tracebacks read the line from)."""
    source = "\n" * (lineno - 1) + "raise _Stop"
    try:
        code = compile(source, filename, "exec").replace(co_name=name)
    except (SyntaxError, ValueError):
        return None
    try:
        exec(code, {"__name__": name, "__file__": filename, "_Stop": _Stop})
    except _Stop as stop:
        inner = stop.__traceback__
        while inner is not None and inner.tb_next is not None:
            inner = inner.tb_next
        return inner
    return None


class _Stop(Exception):
    """Raised by the stand-in code at the remote line."""
