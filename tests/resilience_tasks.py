"""Task functions for the fault tests (importable by worker processes)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def slow_inc(x: int, delay: float = 0.0) -> int:
    time.sleep(delay)
    return x + 1


def add(*xs: int) -> int:
    return sum(xs)


def where(delay: float = 0.0) -> int:
    time.sleep(delay)
    return os.getpid()


def die(marker: str) -> None:
    """Kill the worker running this task (as a segfault or an OOM kill would)."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    os._exit(1)


def big_counted(marker: str, n: int = 200_000) -> list[int]:
    """A result too large for Redis (kept on the worker); records each execution."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    return list(range(n))


def executions(marker: str) -> int:
    path = Path(marker)
    return len(path.read_text().splitlines()) if path.exists() else 0


def logged_inc(x: int, log_dir: str, key_hint: str) -> int:
    """A leaf of the chaos graph: appends its identity to a per-process log (one line, one
    write, so concurrent appends never interleave), sleeps a little, returns x + 1."""
    with open(os.path.join(log_dir, f"{os.getpid()}.log"), "a") as f:
        f.write(f"{key_hint}\n")
    time.sleep(0.002)
    return x + 1


def logged_sum(values: list[int], log_dir: str, key_hint: str) -> int:
    with open(os.path.join(log_dir, f"{os.getpid()}.log"), "a") as f:
        f.write(f"{key_hint}\n")
    return sum(values)


def execution_counts(log_dir: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for path in Path(log_dir).glob("*.log"):
        for line in path.read_text().splitlines():
            counts[line] = counts.get(line, 0) + 1
    return counts
