"""Workers: run tasks, keep results, serve them to peers."""

from rdist.worker.context import get_worker
from rdist.worker.server import Worker

__all__ = ["Worker", "get_worker"]
