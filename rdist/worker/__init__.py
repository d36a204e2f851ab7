"""Workers: run tasks, keep results, serve them to peers (names loaded on first use, so
the nanny, which lives here, does not load a worker it only watches)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdist.lazy import exports

if TYPE_CHECKING:
    from rdist.worker.context import get_worker
    from rdist.worker.server import Worker

__all__ = ["Worker", "get_worker"]

_HOMES = {"Worker": "rdist.worker.server", "get_worker": "rdist.worker.context"}


__getattr__ = exports(__name__, _HOMES)
