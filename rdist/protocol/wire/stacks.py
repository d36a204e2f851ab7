"""Call stacks of running tasks, on request (the dashboard's worker page).

The dashboard puts a :class:`StackRequest` on the worker's stream; the worker answers with
a :class:`CallStacks` record stored under ``stacks:<id>`` for a minute, which the dashboard
reads back. Neither side talks to the other directly, and the scheduler is not involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from rdist.protocol.wire.base import (
    NAME,
    TEXT,
    TIMESTAMP,
    ListOf,
    Message,
    Record,
    Rows,
    fields,
    row_spec,
)


@dataclass(slots=True)
class StackRequest(Message):
    """Send the call stacks of your running tasks to ``stacks:<id>``."""

    OP = "call-stacks"
    id: str


fields(StackRequest, id=NAME)


class TaskStack(NamedTuple):
    """Where one running task is: its key, its thread, its frames innermost last."""

    key: str
    thread: str
    frames: list[str]  #: ``file:line in function`` plus the source line


TASK_STACK = row_spec(TaskStack, NAME, TEXT, ListOf(TEXT, max_items=200))


@dataclass(slots=True)
class CallStacks(Record):
    """A worker's answer to a :class:`StackRequest`."""

    KIND = "call stacks"
    worker: str
    time: float
    stacks: list[TaskStack]


fields(CallStacks, worker=NAME, time=TIMESTAMP, stacks=Rows(TASK_STACK))

__all__ = ["CallStacks", "StackRequest", "TaskStack"]
