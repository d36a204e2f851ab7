"""Workers: run tasks, keep results, serve them to peers."""

from rdist.worker.server import Worker, get_worker

__all__ = ["Worker", "get_worker"]
