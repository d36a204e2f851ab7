"""How the scheduling keywords of ``submit``, ``map``, ``get`` and ``compute`` become the
metadata each task row carries (``wire.TaskRow``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rdist.client import validate
from rdist.protocol import wire


def worker_list(workers: Any) -> list[str] | None:
    """``workers=`` as given by a user (one address or name, or several) as a list;
    TypeError naming ``workers`` for anything else."""
    return validate.workers(workers)


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
        """From the keywords of a user call, checked (TypeError/ValueError naming the
        argument); most calls give none and share one instance."""
        if (
            workers is None
            and resources is None
            and retries is None
            and type(priority) is int
            and priority == 0
            and allow_other_workers is False
        ):
            return _DEFAULT
        return cls(
            validate.workers(workers),
            validate.priority(priority),
            validate.flag(allow_other_workers, "allow_other_workers"),
            validate.retries(retries),
            validate.resources(resources),
        )

    def rows(self, tasks: Iterable[tuple[str, Any, list[str]]]) -> list[wire.TaskRow]:
        """The rows of ``(key, spec, deps)`` tasks that share these options (a map of
        thousands: the shared part is made once)."""
        make = wire.TaskRow._make
        shared = (self.priority, self.workers, self.loose, self.retries, self.resources)
        return [make((key, deps) + shared) for key, _, deps in tasks]


_DEFAULT = TaskOptions()


def call_options(
    workers: Any, resources: Any, retries: Any, priority: Any, allow_other_workers: Any
) -> TaskOptions:
    """The scheduling keywords of ``submit``/``map``, checked as dask checks them."""
    options = TaskOptions.of(workers, resources, retries, priority, allow_other_workers)
    if options.loose and options.workers is None:
        raise ValueError("Only use allow_other_workers= if using workers=")
    return options
