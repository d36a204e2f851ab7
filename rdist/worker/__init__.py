"""Workers: run tasks, keep results, serve them to peers (names loaded on first use, so
the nanny, which lives here, does not load a worker it only watches)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rdist.worker.context import get_worker
    from rdist.worker.server import Worker

__all__ = ["Worker", "get_worker"]

_HOMES = {"Worker": "rdist.worker.server", "get_worker": "rdist.worker.context"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rdist.worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
