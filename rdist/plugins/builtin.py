"""The plugins rdist ships (dask's): ``UploadFile``, ``UploadDirectory``, ``Environ`` and
``PipInstall``.

In dask, ``UploadDirectory`` and ``PipInstall`` are scheduler plugins that register a
worker or nanny plugin; the rdist scheduler runs no client code, so here they are that
worker plugin themselves -- or, when asked to restart the workers (which a worker cannot
do to itself without setting the plugin up again in the new process), the nanny plugin
(:meth:`as_registered` says which; ``client.register_plugin`` asks).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import logging
import os
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rdist.plugins.base import NannyPlugin, WorkerPlugin

log = logging.getLogger("rdist.plugins")


def _put_on_path(path: str) -> None:
    if path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()


def _import_fresh(name: str) -> None:
    module = sys.modules.get(name)
    if module is not None:
        importlib.reload(module)
    else:
        importlib.import_module(name)


class UploadFile(WorkerPlugin):
    """Send a file (``.py``, ``.egg``, ``.zip``) to every worker, present and future, and
    import it there (``load``) -- dask's ``UploadFile``."""

    name = "upload_file"

    def __init__(self, filepath: str, load: bool = True) -> None:
        self.filename = os.path.basename(filepath)
        self.load = load
        with open(filepath, "rb") as f:
            self.data = f.read()

    def setup(self, worker: Any) -> None:
        directory = worker.local_directory
        path = os.path.join(directory, self.filename)
        with open(path, "wb") as f:
            f.write(self.data)
        _put_on_path(directory)
        module, ext = os.path.splitext(self.filename)
        if ext in (".egg", ".zip", ".pyz", ".whl"):
            _put_on_path(path)
        if self.load and ext in (".py", ".egg", ".zip", ".pyz"):
            _import_fresh(module)


def _zipped(path: str, skip_words: Iterable[str], skip: Iterable[Callable[[str], bool]]) -> bytes:
    words, predicates = set(skip_words), list(skip)
    out = io.BytesIO()
    parent = os.path.dirname(os.path.abspath(path))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for root, _dirs, files in os.walk(path):
            for file in files:
                filename = os.path.join(root, file)
                if any(p(filename) for p in predicates):
                    continue
                if words & set(filename.split(os.sep)):
                    continue
                z.write(filename, os.path.relpath(filename, parent))
    return out.getvalue()


class UploadDirectory(WorkerPlugin):
    """Send a local directory to every worker (dask's ``UploadDirectory``): unpacked in
    the worker's own directory, on ``sys.path`` when ``update_path``; with
    ``restart_workers``, unpacked by every nanny, which then restarts its worker."""

    def __init__(
        self,
        path: str,
        restart_workers: bool = False,
        update_path: bool = False,
        skip_words: Iterable[str] = (".git", ".github", ".pytest_cache", "tests", "docs"),
        skip: Iterable[Callable[[str], bool]] = (lambda fn: os.path.splitext(fn)[1] == ".pyc",),
        mode: str = "workers",
    ) -> None:
        if mode != "workers":
            raise ValueError(
                f"mode={mode!r}: the rdist scheduler runs no client code, so directories "
                "go to the workers only (mode='workers')"
            )
        path = os.path.expanduser(path)
        self.path = os.path.basename(os.path.normpath(path))
        self.restart_workers = restart_workers
        self.update_path = update_path
        self.name = "upload-directory-" + self.path
        self.data = _zipped(path, skip_words, skip)

    def as_registered(self) -> Any:
        return _UnpackOnNanny(self) if self.restart_workers else self

    def setup(self, worker: Any) -> None:
        self.unpack(worker.local_directory)
        if self.update_path:
            _put_on_path(os.path.join(worker.local_directory, self.path))

    def unpack(self, directory: str) -> str:
        with zipfile.ZipFile(io.BytesIO(self.data)) as z:
            z.extractall(directory)
        return os.path.join(directory, self.path)


class _UnpackOnNanny(NannyPlugin):
    """``UploadDirectory(restart_workers=True)``: every nanny unpacks it (and puts it on the
    workers' ``PYTHONPATH`` with ``update_path``), then restarts its worker."""

    restart = True

    def __init__(self, upload: UploadDirectory) -> None:
        self.upload = upload
        self.name = upload.name
        self.root = ""

    def setup(self, nanny: Any) -> None:
        self.root = tempfile.mkdtemp(prefix="rdist-nanny-files-")
        unpacked = self.upload.unpack(self.root)
        if self.upload.update_path:
            paths = [unpacked, *filter(None, nanny.env.get("PYTHONPATH", "").split(os.pathsep))]
            base = os.environ.get("PYTHONPATH")
            nanny.env["PYTHONPATH"] = os.pathsep.join([*paths, *([base] if base else [])])

    def teardown(self, nanny: Any) -> None:
        import shutil

        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)


class Environ(NannyPlugin):
    """Environment variables for every worker process (dask's ``Environ``): set by each
    nanny, which then restarts its worker so that they take effect."""

    restart = True

    def __init__(self, environ: dict[str, Any] | None = None) -> None:
        self.environ = {k: str(v) for k, v in (environ or {}).items()}

    def setup(self, nanny: Any) -> None:
        nanny.env.update(self.environ)


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """One pip at a time on this host (workers share the environment they install into)."""
    path = os.path.join(tempfile.gettempdir(), f"rdist-pip-{socket.gethostname()}.lock")
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def pip_install(packages: list[str], pip_options: list[str]) -> None:
    """``pip install`` into this interpreter's environment (a requirements file, so that
    ``${VARIABLES}`` in the package specs are expanded, as in dask)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as requirements, _host_lock():
        requirements.write("\n".join(packages))
        requirements.flush()
        cmd = [sys.executable, "-m", "pip", "install", *pip_options, "-r", requirements.name]
        log.info("pip installing %s", packages)
        done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip install failed with '{done.stderr.strip()}'")
    importlib.invalidate_caches()


class PipInstall(WorkerPlugin):
    """``pip install`` packages on every worker, present and future (dask's
    ``PipInstall``); with ``restart_workers``, every nanny installs them and restarts its
    worker (new versions of modules already imported need a new process)."""

    name = "pip"

    def __init__(
        self,
        packages: list[str],
        pip_options: list[str] | None = None,
        restart_workers: bool = False,
    ) -> None:
        self.packages = list(packages)
        self.pip_options = list(pip_options or [])
        self.restart_workers = restart_workers

    def as_registered(self) -> Any:
        return _PipInstallOnNanny(self.packages, self.pip_options) if self.restart_workers else self

    def setup(self, worker: Any) -> None:
        pip_install(self.packages, self.pip_options)


class _PipInstallOnNanny(NannyPlugin):
    restart = True
    name = "pip"

    def __init__(self, packages: list[str], pip_options: list[str]) -> None:
        self.packages = packages
        self.pip_options = pip_options

    def setup(self, nanny: Any) -> None:
        pip_install(self.packages, self.pip_options)
