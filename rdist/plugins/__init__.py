"""Plugins (as dask's): hooks into workers, nannies and the scheduler.

- :mod:`~rdist.plugins.base`: :class:`WorkerPlugin`, :class:`NannyPlugin`,
  :class:`SchedulerPlugin` -- classes of no-op hooks to override;
- :mod:`~rdist.plugins.builtin`: :class:`UploadFile`, :class:`UploadDirectory`,
  :class:`Environ`, :class:`PipInstall`;
- :mod:`~rdist.plugins.registry`: ``client.register_plugin`` -- worker and nanny plugins
  are kept in Redis and reach every present and future worker (nanny);
- :mod:`~rdist.plugins.worker_side`, :mod:`~rdist.plugins.nanny_side`,
  :mod:`~rdist.plugins.scheduler_side`: each process's plugins and their hooks (scheduler
  plugins come from the scheduler's own configuration).
"""

from rdist.plugins.base import NannyPlugin, SchedulerPlugin, WorkerPlugin
from rdist.plugins.builtin import Environ, PipInstall, UploadDirectory, UploadFile

__all__ = [
    "Environ",
    "NannyPlugin",
    "PipInstall",
    "SchedulerPlugin",
    "UploadDirectory",
    "UploadFile",
    "WorkerPlugin",
]
