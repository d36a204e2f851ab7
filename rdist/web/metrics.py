"""``/metrics`` in the Prometheus text exposition format (version 0.0.4).

Built from the same reads as the pages: the task census, the workers hash, the task-stream
rate and Redis's own INFO. Worker metrics that other parts of rdist add later (spilled or
transferred bytes, say) appear automatically as ``rdist_worker_<field>`` gauges.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Worker record fields with a known meaning: field -> (metric name, type, help).
WORKER_METRICS: dict[str, tuple[str, str, str]] = {
    "memory": ("rdist_worker_memory_bytes", "gauge", "Resident memory of the worker process"),
    "memory_limit": ("rdist_worker_memory_limit_bytes", "gauge", "Memory limit (0: none)"),
    "cpu": ("rdist_worker_cpu_percent", "gauge", "CPU use of the worker process"),
    "nthreads": ("rdist_worker_threads", "gauge", "Threads running tasks"),
    "executing": ("rdist_worker_executing_tasks", "gauge", "Tasks executing now"),
    "stored": ("rdist_worker_stored_keys", "gauge", "Results held by the worker"),
    "stored_bytes": ("rdist_worker_stored_bytes", "gauge", "Bytes of results held"),
    "executed": ("rdist_worker_executed_tasks_total", "counter", "Tasks executed since start"),
    "net_sent": ("rdist_worker_host_network_sent_bytes_total", "counter", "Host bytes sent"),
    "net_recv": (
        "rdist_worker_host_network_received_bytes_total",
        "counter",
        "Host bytes received",
    ),
    "disk_read": ("rdist_worker_disk_read_bytes_total", "counter", "Bytes read from storage"),
    "disk_write": ("rdist_worker_disk_written_bytes_total", "counter", "Bytes written to storage"),
}
#: Numeric fields that are identities or timestamps, not measurements.
NOT_METRICS = frozenset({"pid", "last_seen", "age", "port"})


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items()) + "}"


class Exposition:
    """Collects samples grouped by metric (HELP and TYPE once per metric, as required)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def add(
        self,
        name: str,
        kind: str,
        help_text: str,
        value: float,
        labels: dict[str, str] | None = None,
    ) -> None:
        family = self._families.setdefault(name, (kind, help_text, []))
        family[2].append(f"{name}{_labels(labels or {})} {_number(value)}")

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text, samples) in self._families.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(
    census: dict[str, Any],
    workers: list[dict[str, Any]],
    rate: float,
    redis_info: dict[str, Any] | None = None,
) -> str:
    out = Exposition()
    for state, count in sorted(census["by_state"].items()):
        out.add(
            "rdist_tasks",
            "gauge",
            "Tasks known to the scheduler, by state",
            count,
            {"state": state},
        )
    out.add(
        "rdist_task_memory_bytes",
        "gauge",
        "Bytes of task results in memory (all workers)",
        census.get("memory_bytes", 0),
    )
    out.add("rdist_tasks_per_second", "gauge", "Tasks finished per second (last 10 s)", rate)
    out.add("rdist_workers", "gauge", "Workers registered", len(workers))
    for worker in workers:
        _worker_samples(out, worker)
    for field, name, help_text in (
        ("used_memory", "rdist_redis_used_memory_bytes", "Redis memory"),
        ("maxmemory", "rdist_redis_maxmemory_bytes", "Redis memory limit"),
    ):
        if redis_info and isinstance(redis_info.get(field), (int, float)):
            out.add(name, "gauge", help_text, redis_info[field])
    return out.render()


def _worker_samples(out: Exposition, worker: dict[str, Any]) -> None:
    labels = {"worker": str(worker.get("address", "")), "name": str(worker.get("name", ""))}
    for field, value in _numeric_fields(worker):
        if field in WORKER_METRICS:
            name, kind, help_text = WORKER_METRICS[field]
        else:
            name, kind, help_text = (
                f"rdist_worker_{_metric_name(field)}",
                "gauge",
                f"Worker metric {field}",
            )
        out.add(name, kind, help_text, value, labels)


def _numeric_fields(worker: dict[str, Any]) -> Iterable[tuple[str, float]]:
    for field, value in sorted(worker.items()):
        if (
            field not in NOT_METRICS
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            yield field, value


def _metric_name(field: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in field.lower())
