"""Diagnostics users attach to bug reports, with dask.distributed's names:

- :func:`progress` -- live bars of futures (text in a terminal, ipywidgets in Jupyter);
- :class:`get_task_stream` -- the task stream (runs and transfers) of a block of code;
- :class:`performance_report` -- one self-contained HTML file about a block of code: task
  stream with transfers, per-group and per-span totals, worker memory and CPU, the
  profiler's flame graph, the cluster's events;
- :func:`span` -- name the tasks submitted inside a block (``rdist.client.spans``).

The data comes from what the cluster records anyway (the task stream, heartbeats, events
and the workers' sampling profiler, ``rdist.worker.profiler``), read from Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rdist.lazy import exports

if TYPE_CHECKING:
    from rdist.client.spans import span
    from rdist.diagnostics.progressbar import progress
    from rdist.diagnostics.report import get_task_stream, performance_report

__all__ = ["get_task_stream", "performance_report", "progress", "span"]

_HOMES = {
    "get_task_stream": "rdist.diagnostics.report",
    "performance_report": "rdist.diagnostics.report",
    "progress": "rdist.diagnostics.progressbar",
    "span": "rdist.client.spans",
}

__getattr__ = exports(__name__, _HOMES)
