"""The call stacks of this worker's running tasks, for the dashboard's worker page.

Answering a ``call-stacks`` request reads ``sys._current_frames()`` -- a snapshot of every
thread's frame, taken without stopping them -- for the threads the executor says run a
task now, and stores the formatted stacks under the request's key for a minute.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

from rdist.protocol.wire import CallStacks, StackRequest, TaskStack

if TYPE_CHECKING:
    from rdist.worker.server import Worker

#: Innermost frames kept per task: where it is, not how the worker got there.
MAX_FRAMES = 40
ANSWER_TTL = 60


def call_stacks(address: str, running: dict[int, str]) -> CallStacks:
    """The stacks of the threads in ``running`` (thread id -> task key)."""
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    stacks = []
    for ident, key in sorted(running.items(), key=lambda item: item[1]):
        frame = frames.get(ident)
        if frame is None:  # the task ended meanwhile
            continue
        lines: list[str] = []
        for summary in traceback.extract_stack(frame)[-MAX_FRAMES:]:
            lines.append(f"{summary.filename}:{summary.lineno} in {summary.name}")
            if summary.line:
                lines.append(f"    {summary.line}")
        stacks.append(TaskStack(key, names.get(ident, str(ident)), lines))
    return CallStacks(address, time.time(), stacks)


def answer(worker: Worker, msg: StackRequest) -> None:
    stacks = call_stacks(worker.address, dict(worker.executor.running))
    worker.store.streams.put_stacks(msg.id, stacks.encode(), ANSWER_TTL)
