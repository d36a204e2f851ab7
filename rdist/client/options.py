"""How the scheduling keywords of ``submit``, ``map``, ``get`` and ``compute`` become the
metadata each task row carries (``wire.TaskRow``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rdist.protocol import wire


def worker_list(workers: Any) -> list[str] | None:
    """``workers=`` as given by a user (one address or name, or several) as a list."""
    if workers is None:
        return None
    if isinstance(workers, str):
        return [workers]
    return [str(w) for w in workers] or None


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """The scheduling metadata shared by the tasks of one call."""

    workers: list[str] | None = None  #: restriction to these addresses or names
    priority: int = 0
    loose: bool = False  #: allow_other_workers: the restriction is a preference
    retries: int = 0
    resources: dict[str, float] | None = None

    @classmethod
    def of(
        cls,
        workers: Any = None,
        resources: dict[str, float] | None = None,
        retries: int | None = None,
        priority: int = 0,
        allow_other_workers: bool = False,
    ) -> TaskOptions:
        """From the keywords of a user call (most calls give none: they share one)."""
        if workers is None and resources is None and not retries and not priority:
            return _LOOSE if allow_other_workers else _DEFAULT
        return cls(
            worker_list(workers),
            int(priority or 0),
            bool(allow_other_workers),
            retries or 0,
            resources,
        )

    def rows(self, tasks: Iterable[tuple[str, Any, list[str]]]) -> list[wire.TaskRow]:
        """The rows of ``(key, spec, deps)`` tasks that share these options (a map of
        thousands: the shared part is made once)."""
        make = wire.TaskRow._make
        shared = (self.priority, self.workers, self.loose, self.retries, self.resources)
        return [make((key, deps) + shared) for key, _, deps in tasks]


_DEFAULT = TaskOptions()
_LOOSE = TaskOptions(loose=True)
