"""Exceptions users catch (named as in ``distributed``)."""

from __future__ import annotations

from concurrent.futures import CancelledError as _BaseCancelledError


class CancelledError(_BaseCancelledError):
    """The future was cancelled (or released by a restart)."""


class DataUnavailable(CancelledError):
    """A finished result could not be fetched from any holder (e.g. its worker just died);
    the scheduler recomputes it once it notices, and waiting callers try again."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"results of {keys} are not available on any worker right now")
        self.keys = keys


class KilledWorker(Exception):
    """A task was running on ``allowed-failures`` workers that died."""

    def __init__(self, task: str = "", last_worker: str = "", allowed_failures: int = 3) -> None:
        super().__init__(
            f"Attempted to run task {task!r} on {allowed_failures} different workers, "
            f"but all those workers died while running it. The last worker was {last_worker}."
        )
        self.task = task
        self.last_worker = last_worker
        self.allowed_failures = allowed_failures


class Reschedule(Exception):
    """Raised inside a task: the task is not an error but goes back to the scheduler,
    which places it again (possibly on another worker), as ``distributed.Reschedule``."""


class SpecLost(Reschedule):
    """A task's spec was not in Redis when its worker loaded it: Redis lost its data (the
    client re-submits the graph on the new epoch) or the task was released meanwhile. Not
    the task's error: it goes back to the scheduler, which places it again -- by then with
    the re-submitted spec -- or has forgotten it."""


class ClosedClientError(RuntimeError):
    """A call on a client that is closed, or on a future of one (as ``distributed``'s)."""
