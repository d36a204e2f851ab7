"""LocalCluster: Redis (embedded unless given), a scheduler and workers on this machine.

This module sits above the scheduler, the workers, the dashboard and the client, and
nothing below imports it. ``Client()`` without an address starts a ``LocalCluster``
through :mod:`rdist.client.local_cluster`, where this module registers it when imported
(``import rdist`` imports it).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from typing import Any

import psutil

from rdist.adapt import Adaptive
from rdist.client import local_cluster
from rdist.client.reprs import html_table
from rdist.config import mask_url
from rdist.embedded import EmbeddedRedis
from rdist.procs import die_with_parent
from rdist.store import connect

log = logging.getLogger("rdist.cluster")


#: dask's dashboard address: port 8787 on this host (a free port if it is taken)
DEFAULT_DASHBOARD = ":8787"


def free_or_any(address: str) -> str:
    """``address``, or the same host on a port the system picks when that port is taken
    (with a warning, as dask gives)."""
    from rdist.web.serve import parse_address

    host, port = parse_address(address)
    if port == 0:
        return address
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            warnings.warn(
                f"Port {port} is already in use; the dashboard is served on another port "
                "(see cluster.dashboard_link)",
                stacklevel=3,
            )
            return f"{host}:0"
    return address


def _bytes(n: int) -> str:
    if not n:
        return "no limit"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def parse_memory(limit: Any, n_workers: int) -> int:
    """``"auto"`` splits system memory between workers; ``"4GB"``, ``"512MiB"``, ints pass."""
    if limit in (None, 0, "0"):
        return 0
    if limit == "auto":
        return psutil.virtual_memory().total // max(1, n_workers)
    if isinstance(limit, (int, float)):
        return int(limit)
    text = str(limit).strip().upper().replace(" ", "")
    units = {
        "KIB": 2**10,
        "MIB": 2**20,
        "GIB": 2**30,
        "TIB": 2**40,
        "KB": 10**3,
        "MB": 10**6,
        "GB": 10**9,
        "TB": 10**12,
        "K": 10**3,
        "M": 10**6,
        "G": 10**9,
        "B": 1,
    }
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(float(text))


def seconds(value: Any) -> float:
    """A duration as dask writes them: a number of seconds, or ``"500ms"``, ``"2s"``,
    ``"1m"``, ``"1h"``."""
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    for suffix, factor in (("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * factor
    return float(text)


def child_env(redis_url: str) -> dict[str, str]:
    """The environment of a process we start: ours, and the Redis URL -- which carries the
    password -- in ``RDIST_REDIS_URL`` rather than on its command line, which every local
    user can read (``/proc/<pid>/cmdline``; the environment only its owner)."""
    return {**os.environ, "RDIST_REDIS_URL": redis_url}


def _level_name(silence_logs: Any) -> str:
    """``silence_logs`` (a level, its name, or False for INFO) as ``--log-level`` takes it."""
    if silence_logs is False or silence_logs is None:
        return "info"
    if silence_logs is True:
        return "warning"
    number = (
        silence_logs
        if isinstance(silence_logs, int)
        else logging.getLevelName(str(silence_logs).upper())
    )
    if not isinstance(number, int):
        raise ValueError(f"LocalCluster(silence_logs={silence_logs!r}): a logging level")
    for name in ("debug", "info", "warning", "error", "critical"):
        if number <= logging.getLevelName(name.upper()):
            return name
    return "critical"


class _WorkerProcess:
    """One ``rdist worker`` subprocess."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(args, env=env, preexec_fn=die_with_parent)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout: float) -> None:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _alive(worker: Any) -> bool:
    """A worker process still running, or an in-process worker not closed."""
    if isinstance(worker, _WorkerProcess):
        return worker.process.poll() is None
    return not worker.stop_event.is_set()


class LocalCluster:
    """As ``distributed.LocalCluster``, with Redis as the control plane."""

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        processes: bool = True,
        memory_limit: Any = "auto",
        redis_url: str | None = None,
        name: str | None = None,
        dashboard_address: str | None = DEFAULT_DASHBOARD,
        host: str = "127.0.0.1",
        timeout: float = 60,
        nanny: bool = True,
        **kwargs: Any,
    ) -> None:
        cores = os.cpu_count() or 1
        if n_workers is None:
            n_workers = (
                (min(cores, 4) if processes else 1)
                if threads_per_worker is None
                else max(1, cores // threads_per_worker)
            )
        if threads_per_worker is None:
            threads_per_worker = max(1, cores // max(1, n_workers)) if processes else cores
        self.processes = processes
        #: what the child processes show on stderr (dask's ``silence_logs``, WARNING by
        #: default: a Client() prints nothing unless something is wrong); their log
        #: buffers keep INFO lines all the same (``client.get_worker_logs``)
        self._child_log_level = _level_name(kwargs.pop("silence_logs", logging.WARNING))
        #: worker processes run under a nanny, as dask's: a worker that dies is replaced,
        #: one over its memory limit restarted (``nanny=False`` opts out)
        self.nanny = nanny
        self.threads_per_worker = threads_per_worker
        self.memory_limit = parse_memory(memory_limit, n_workers)
        self.host = host
        self.cluster_name = name or (f"local-{uuid.uuid4().hex[:8]}" if redis_url else "default")
        self._redis: EmbeddedRedis | None = None
        if redis_url is None:
            self._redis = EmbeddedRedis().start()
            redis_url = self._redis.url
        self.redis_url = redis_url
        self.scheduler_address = redis_url
        self.dashboard_address = dashboard_address
        self._dashboard: Any = None
        self.dashboard_link: str | None = None
        self._workers: list[Any] = []
        self._scheduler: Any = None
        self._closed = False
        self._counter = 0
        self._adaptive: Adaptive | None = None
        #: guards ``_workers``: adapt's thread scales while the caller may look or scale
        self._lock = threading.RLock()
        self._retirer: Any = None  #: the client that retires workers (adapt's scale-down)
        self.status = "running"
        try:
            self._start_scheduler()
            # the dashboard (a process of its own) starts beside the workers, not before
            self._dashboard = self._start_dashboard(dashboard_address)
            self.scale(n_workers)
            self.wait_for_workers(n_workers, timeout)
            if self._dashboard is not None:
                self.dashboard_link = self._dashboard.ready().link
        except BaseException:
            self.close()
            raise

    # -- processes ---------------------------------------------------------------------------
    def _start_dashboard(self, address: str | None) -> Any:
        if address is None:
            return None
        from rdist.web.serve import start_dashboard

        return start_dashboard(self.redis_url, self.cluster_name, free_or_any(address), wait=False)

    def _cli(self, *args: str) -> list[str]:
        """The command line of a child role; its Redis URL goes by :func:`child_env`."""
        return [
            sys.executable,
            "-m",
            "rdist",
            *args,
            "--cluster",
            self.cluster_name,
            "--log-level",
            self._child_log_level,
        ]

    def _start_scheduler(self) -> None:
        if self.processes:
            self._scheduler = subprocess.Popen(
                self._cli("scheduler"), env=child_env(self.redis_url), preexec_fn=die_with_parent
            )
            return
        from rdist.scheduler.server import SchedulerServer

        self._scheduler = SchedulerServer.from_url(self.redis_url, self.cluster_name)
        threading.Thread(target=self._scheduler.run, name="rdist-scheduler", daemon=True).start()

    def _start_worker(self) -> Any:
        self._counter += 1
        name = f"{self.cluster_name}-worker-{self._counter}"
        if self.processes:
            args = self._cli(
                "worker",
                "--nthreads",
                str(self.threads_per_worker),
                "--name",
                name,
                "--host",
                self.host,
                "--port",
                "0",  # a free port each, whatever worker.port the configuration gives
                "--memory-limit",
                str(self.memory_limit),
                "--nanny" if self.nanny else "--no-nanny",
            )
            return _WorkerProcess(name, args, child_env(self.redis_url))
        from rdist.worker.server import Worker

        worker = Worker(
            connect(self.redis_url, self.cluster_name),
            nthreads=self.threads_per_worker,
            name=name,
            host=self.host,
            memory_limit=self.memory_limit,
        )
        worker.start()
        return worker

    def scale(self, n: int) -> None:
        """Start or stop workers until there are ``n``."""
        stopping = []
        with self._lock:
            self._forget_exited()
            while len(self._workers) < n:
                self._workers.append(self._start_worker())
            while len(self._workers) > n:
                stopping.append(self._workers.pop())
        for worker in stopping:
            if isinstance(worker, _WorkerProcess):
                worker.stop()
                worker.wait(10)
            else:
                worker.close()

    def scale_up(self, n: int) -> None:
        """Start workers until there are ``n`` (never stops one: adapt's way up)."""
        with self._lock:
            self._forget_exited()
            while len(self._workers) < n:
                self._workers.append(self._start_worker())

    def adapt(
        self,
        minimum: int = 0,
        maximum: float = math.inf,
        interval: Any = "1s",
        wait_count: int = 3,
        target_duration: Any = "5s",
        **kwargs: Any,
    ) -> Adaptive:
        """Grow and shrink with the work, between ``minimum`` and ``maximum`` workers, as
        dask's ``adapt`` (see :mod:`rdist.adapt`): scale-down retires workers with their
        data moved first. Returns the :class:`~rdist.adapt.Adaptive`; ``stop()`` ends it,
        and calling ``adapt`` again replaces it."""
        if self._adaptive is not None:
            self._adaptive.stop()
        self._adaptive = Adaptive(
            self,
            connect(self.redis_url, self.cluster_name),
            minimum=minimum,
            maximum=maximum,
            interval=seconds(interval),
            wait_count=wait_count,
            target_duration=seconds(target_duration),
        )
        return self._adaptive

    def retire(self, addresses: list[str]) -> None:
        """Retire these workers (``client.retire_workers``: their data moves to the others
        first, their nannies stand down) and forget their processes."""
        if self._retirer is None:
            from rdist.client.client import Client

            self._retirer = Client(
                self.redis_url, cluster_name=self.cluster_name, set_as_default=False
            )
        names = {a: n for n, a in self.worker_addresses().items()}
        retired = self._retirer.retire_workers(addresses)
        gone = {names[a] for a in retired if a in names}
        with self._lock:
            leaving = [w for w in self._workers if w.name in gone]
            self._workers = [w for w in self._workers if w.name not in gone]
        for worker in leaving:
            if isinstance(worker, _WorkerProcess):
                worker.wait(30)  # its nanny exits once the worker left

    def _forget_exited(self) -> None:
        """Drop worker processes that ended for good -- retired through any client
        (``client.retire_workers``: the nanny, or a worker without one, exits) -- so that
        ``scale`` counts only workers that are there."""
        with self._lock:
            self._workers = [w for w in self._workers if _alive(w)]

    @property
    def workers(self) -> dict[str, Any]:
        with self._lock:
            self._forget_exited()
            return {w.name: w for w in self._workers}

    def worker_addresses(self) -> dict[str, str]:
        """name -> address of the running workers, from the ``workers`` hash."""
        store = connect(self.redis_url, self.cluster_name)
        try:
            return {record.name: address for address, record in store.workers.all().items()}
        finally:
            store.close()

    def wait_for_workers(self, n: int, timeout: float = 60) -> None:
        """Wait until ``n`` of our workers registered, woken by their join events."""
        deadline = time.monotonic() + timeout
        names = {w.name for w in self._workers}
        store = connect(self.redis_url, self.cluster_name)
        last: bytes | str = "0-0"
        try:
            while len(names & set(self.worker_addresses())) < n:
                self._check_children()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"workers did not start within {timeout} s")
                got = store.read(store.keys.events, last, 100, 200)
                if got:
                    last = got[-1][0]
                elif store.url.startswith("fakeredis://"):
                    time.sleep(0.01)  # fakeredis does not block
        finally:
            store.close()

    def _check_children(self) -> None:
        for w in self._workers:
            if isinstance(w, _WorkerProcess) and w.process.poll() is not None:
                raise RuntimeError(f"worker {w.name} exited with code {w.process.returncode}")
        if isinstance(self._scheduler, subprocess.Popen) and self._scheduler.poll() is not None:
            raise RuntimeError(f"scheduler exited with code {self._scheduler.returncode}")

    def close(self, timeout: float = 10) -> None:
        if self._closed:
            return
        self._closed = True
        self.status = "closed"
        if self._adaptive is not None:
            self._adaptive.stop()
        if self._retirer is not None:
            self._retirer.close()
        with self._lock:
            workers, self._workers = self._workers, []
        if self._dashboard is not None:
            self._dashboard.stop()
        for w in workers:
            if isinstance(w, _WorkerProcess):
                w.stop()
            else:
                w.close()
        for w in workers:
            if isinstance(w, _WorkerProcess):
                w.wait(timeout)
        if isinstance(self._scheduler, subprocess.Popen):
            self._scheduler.terminate()
            try:
                self._scheduler.wait(timeout)
            except subprocess.TimeoutExpired:
                self._scheduler.kill()
        elif self._scheduler is not None:
            self._scheduler.stop()
        if self._redis is not None:
            self._redis.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return (
            f"LocalCluster({mask_url(self.redis_url)!r}, workers={len(self._workers)}, "
            f"threads={len(self._workers) * self.threads_per_worker}, status={self.status}, "
            f"dashboard={self.dashboard_link})"
        )

    def _repr_html_(self) -> str:
        """Jupyter's view: what ``repr`` says, as a small table (no secret in it)."""
        return html_table(
            "LocalCluster",
            [
                ("Redis", mask_url(self.redis_url)),
                ("Cluster", self.cluster_name),
                ("Workers", str(len(self._workers))),
                ("Threads per worker", str(self.threads_per_worker)),
                ("Nanny", "yes" if self.nanny and self.processes else "no"),
                ("Memory per worker", _bytes(self.memory_limit)),
                ("Status", self.status),
            ],
            self.dashboard_link,
        )


local_cluster.register(LocalCluster)
