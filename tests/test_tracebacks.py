"""A traceback travels as frames and comes back as a real traceback object."""

from __future__ import annotations

import pickle
import traceback

from rdist.protocol import tracebacks


def _inner() -> None:
    raise ValueError("deep")


def _outer() -> None:
    _inner()


def _caught() -> BaseException:
    try:
        _outer()
    except ValueError as exc:
        return exc
    raise AssertionError("no exception")


def test_frames_survive_pickling_and_rebuild_with_files_lines_and_names() -> None:
    exc = _caught()
    frames = pickle.loads(pickle.dumps(tracebacks.frames_of(exc.__traceback__)))
    rebuilt = tracebacks.rebuild(frames)
    assert [(f.filename, f.lineno, f.name) for f in traceback.extract_tb(rebuilt)] == [
        (f.filename, f.lineno, f.name) for f in traceback.extract_tb(exc.__traceback__)
    ]
    assert [name for _, _, name in frames][-2:] == ["_outer", "_inner"]


def test_an_exception_raised_with_the_rebuilt_traceback_prints_the_remote_frames() -> None:
    frames = tracebacks.frames_of(_caught().__traceback__)
    try:
        raise KeyError("x").with_traceback(tracebacks.rebuild(frames))
    except KeyError:
        printed = traceback.format_exc()
    assert "in _inner" in printed and "raise ValueError" in printed


def test_frames_from_the_wire_are_checked() -> None:
    assert tracebacks.valid_frames("nonsense") == []
    assert tracebacks.valid_frames([("f.py", "3", "g"), ("f.py", 3, "g"), (1, 2)]) == [
        ("f.py", 3, "g")
    ]
    assert tracebacks.valid_frames([["f.py", 0, "g"]]) == []


def test_deep_recursion_keeps_the_innermost_frames() -> None:
    def down(n: int) -> None:
        if n == 0:
            raise RecursionError("bottom")
        down(n - 1)

    try:
        down(300)
    except RecursionError as exc:
        frames = tracebacks.frames_of(exc.__traceback__)
    assert len(frames) == tracebacks.MAX_FRAMES
    assert frames[-1][2] == "down"
    assert tracebacks.rebuild(frames) is not None


def test_an_impossible_file_name_is_skipped_not_fatal() -> None:
    assert tracebacks.rebuild([("bad\x00name.py", 3, "f")]) is None
