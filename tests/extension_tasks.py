"""Tasks and a plugin for the extension kill tests, importable by worker processes."""

from __future__ import annotations

import os
from typing import Any

from rdist import WorkerPlugin

MARK = "RDIST_TEST_PLUGIN_MARK"


def inc(x: int) -> int:
    return x + 1


class EnvMark(WorkerPlugin):
    """Sets an environment variable in the worker's process at setup."""

    def __init__(self, value: str) -> None:
        self.value = value

    def setup(self, worker: Any) -> None:
        os.environ[MARK] = self.value


def read_mark() -> str | None:
    return os.environ.get(MARK)
