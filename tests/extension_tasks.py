"""Tasks and a plugin for the extension kill tests, importable by worker processes."""

from __future__ import annotations

import os
from typing import Any

from rdist import NannyPlugin, WorkerPlugin

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


def read_env(name: str) -> str | None:
    return os.environ.get(name)


def worker_pid() -> int:
    return os.getpid()


def import_value(module: str) -> Any:
    """``module.VALUE``, imported in the worker (a module an upload put there)."""
    import importlib

    return importlib.import_module(module).VALUE


class CountingNannyPlugin(NannyPlugin):
    """Counts its setups in a file and gives every worker the nanny starts a variable."""

    def __init__(self, path: str) -> None:
        self.path = path

    def setup(self, nanny: Any) -> None:
        with open(self.path, "a") as f:
            f.write("setup\n")
        nanny.env[NANNY_MARK] = "from-the-nanny-plugin"


NANNY_MARK = "RDIST_TEST_NANNY_MARK"


class EnvNannyPlugin(NannyPlugin):
    """Sets a variable for the nanny's next worker processes (no restart): shows that a
    nanny's stream is read and its plugins set up."""

    def __init__(self, value: str) -> None:
        self.value = value

    def setup(self, nanny: Any) -> None:
        nanny.env[NANNY_MARK] = self.value
