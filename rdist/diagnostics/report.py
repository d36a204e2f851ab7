"""``performance_report`` and ``get_task_stream``: context managers over a time window.

As dask's: entering notes the time, leaving reads what the cluster recorded meanwhile --
``get_task_stream`` keeps dask-shaped records in ``.data``; ``performance_report`` writes
one self-contained HTML file (``rdist.diagnostics.html``) with the task stream and its
transfers, the per-group and per-span totals, the workers' memory and CPU, the profile's
flame graph and the cluster's events.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rdist.client import Client
from rdist.client import diagnostics as diag
from rdist.client.default import default_client
from rdist.diagnostics import html
from rdist.diagnostics.collect import Window, report_data

__all__ = ["get_task_stream", "performance_report"]


class get_task_stream:  # noqa: N801  (dask's name: a context manager used like a function)
    """Collect the task stream of the computations run inside the block::

        with get_task_stream() as ts:
            x.compute()
        ts.data  # [{"key", "worker", "thread", "startstops", "status", "nbytes", "type"}]

    With ``plot=True`` (or ``"save"``) the records are also drawn into ``filename`` (a
    self-contained HTML page; dask makes a Bokeh figure), and ``.figure`` is its path."""

    def __init__(
        self,
        client: Client | None = None,
        plot: bool | str = False,
        filename: str = "task-stream.html",
    ) -> None:
        self.client = client
        self.plot = plot
        self.filename = filename
        self.data: list[dict[str, Any]] = []
        self.figure: str | None = None
        self._start = 0.0

    def __enter__(self) -> get_task_stream:
        self.client = self.client or default_client()
        self._start = time.time()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self.client is not None
        runs, moves = diag.task_stream(self.client.store, self._start, time.time())
        self.data = diag.task_records(runs, moves)
        if self.plot:
            html.write_task_stream(self.filename, self.data)
            self.figure = self.filename

    async def __aenter__(self) -> get_task_stream:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)


class performance_report:  # noqa: N801  (dask's name)
    """Write an HTML report of everything that ran inside the block::

        with performance_report(filename="report.html"):
            x.compute()

    The file is self-contained (no CDN, no third-party code): attach it to a bug report.
    """

    def __init__(
        self,
        filename: str = "dask-report.html",
        stacklevel: int = 1,
        mode: str | None = None,
        storage_options: dict[str, Any] | None = None,
        client: Client | None = None,
    ) -> None:
        self.filename = filename
        self.client = client
        self._start = 0.0

    def __enter__(self) -> performance_report:
        self.client = self.client or default_client()
        self._start = time.time()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.client is not None
        store = self.client.store
        stop = time.time()
        runs, moves = diag.task_stream(store, self._start, stop)
        window = Window(self._start, stop, runs, moves)
        html.write_page(Path(self.filename), "rdist performance report", report_data(store, window))

    async def __aenter__(self) -> performance_report:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)
