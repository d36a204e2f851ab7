"""Task executions as OpenTelemetry spans, when ``opentelemetry-api`` is installed.

rdist does not depend on OpenTelemetry: if the package is importable when a worker starts,
each task run becomes a span ``rdist task <group>`` of the ``rdist`` tracer (attributes:
the key, the worker, the ``rdist.span`` names it was submitted in, and its outcome);
where an SDK and exporter are configured (``opentelemetry-sdk``, ``OTEL_*`` variables) they
go wherever that sends them. Without the package this module costs one ``None`` check per
task. ``RDIST_OTEL=0`` turns it off even when installed.
"""

from __future__ import annotations

import importlib
import os
from contextlib import AbstractContextManager
from typing import Any

from rdist.protocol.groups import key_split

__all__ = ["task_tracer"]


class TaskTracer:
    """Starts one span per task run on an OpenTelemetry tracer."""

    def __init__(self, tracer: Any, worker: str) -> None:
        self._tracer = tracer
        self._worker = worker

    def span(self, key: str, names: list[str] | None) -> AbstractContextManager[Any]:
        attributes = {"rdist.key": key, "rdist.worker": self._worker}
        if names:
            attributes["rdist.span"] = " / ".join(names)
        span: AbstractContextManager[Any] = self._tracer.start_as_current_span(
            f"rdist task {key_split(key)}", attributes=attributes
        )
        return span


def task_tracer(worker: str) -> TaskTracer | None:
    """A tracer when ``opentelemetry`` can be imported (and RDIST_OTEL is not 0), else None."""
    if os.environ.get("RDIST_OTEL", "").strip().lower() in ("0", "off", "false", "no"):
        return None
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError:
        return None
    return TaskTracer(trace.get_tracer("rdist"), worker)
