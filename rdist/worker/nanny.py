"""The nanny: runs one worker process, restarts it when it dies, enforces its memory limit.

``rdist worker`` runs under a nanny unless given ``--no-nanny``. The nanny starts
``rdist worker --no-nanny ...`` as a child with its own spill directory, learns the child's
address through a pipe, and then waits on it:

- the child dies (crash, SIGKILL, the kernel's OOM killer): the nanny at once tells the
  scheduler (``worker-lost`` on the ``sched`` stream, on the dead worker's behalf) so its
  work is rescheduled without waiting for a heartbeat timeout, removes its record, stream
  and spill directory, and starts a new worker (after a short backoff if it keeps dying);
- the child's resident memory passes the *terminate* fraction of its limit: the nanny
  kills it, and the above follows;
- the nanny gets SIGTERM (or SIGINT): it passes SIGTERM on, so the worker leaves cleanly
  (handing its unique data to peers), waits for it, and exits 0.

A child that exits with status 0 left cleanly on its own (it announced its departure).
One that exits with :data:`~rdist.procs.EXIT_RETIRED` was retired on purpose
(``client.retire_workers``): the nanny stops and exits 0, so no new worker appears.
One that exits with :data:`~rdist.store.health.EXIT_CONFIG` cannot work as configured (a
wrong password, a TLS certificate that fails, a malformed URL): restarting it would only
fail again, so the nanny stops and exits with that status too.

The Redis URL reaches the child through its environment (``RDIST_REDIS_URL``), never its
command line: ``/proc/<pid>/cmdline`` is readable by every local user, the environment
only by the process's owner.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from rdist.config import mask_url
from rdist.logbuffer import ProcessLog, rdist_version
from rdist.plugins.nanny_side import NannyPlugins
from rdist.procs import EXIT_RETIRED, die_with_parent
from rdist.protocol.wire import WorkerLost
from rdist.store import connect
from rdist.store.connection import ConnectionErrors
from rdist.store.health import EXIT_CONFIG

log = logging.getLogger("rdist.nanny")

#: How often the child's memory is checked (when it has a limit).
MEMORY_CHECK_SECONDS = 0.1
#: A worker that lived at least this long is restarted at once; one dying sooner waits.
STABLE_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 10.0
#: How long a worker may take to leave cleanly (its hand-off of data included).
STOP_GRACE_SECONDS = 30.0


class Nanny:
    def __init__(
        self,
        url: str,
        cluster: str,
        worker_args: list[str],
        memory_limit: int = 0,
        terminate_fraction: float = 0.95,
        spill_root: str | None = None,
    ) -> None:
        self.url = url
        self.cluster = cluster
        self.worker_args = list(worker_args)
        self.memory_limit = memory_limit
        self.terminate_bytes = int(terminate_fraction * memory_limit) if memory_limit else 0
        self.spill_root = spill_root
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = None
        self.directory: str | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._address_known = threading.Event()
        #: environment of the next worker process on top of ours (the Environ plugin)
        self.env: dict[str, str] = {}
        #: nanny plugins (``client.register_plugin``), set up before the first worker
        self.plugins = NannyPlugins(self, url, cluster)
        self._log_store = connect(url, cluster)  # (connects at its first command)
        #: our last log lines, at ``logs:nanny:<worker address>`` once the worker told it
        self.logs = ProcessLog(self._log_store, "nanny")

    # -- life cycle ----------------------------------------------------------------------------
    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit status for the nanny process."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.logs.start()
        log.info(
            "rdist %s nanny (pid %d) starting a worker of cluster %r on %s",
            rdist_version(),
            os.getpid(),
            self.cluster,
            mask_url(self.url),
        )
        try:
            return self._supervise()
        finally:
            self.logs.close()
            self._log_store.close()

    def _supervise(self) -> int:
        self.plugins.start()
        failures = 0
        status = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            self._start_child()
            reason = self._watch()
            if self._stopping.is_set():
                break
            code = self.proc.returncode if self.proc is not None else None
            if reason == "exited" and code == EXIT_RETIRED:
                log.info("worker %s was retired: the nanny stops too", self.address)
                break
            self._after_death(reason)
            if reason == "exited" and self.proc is not None and self.proc.returncode == EXIT_CONFIG:
                log.error(
                    "worker exited with status %d: it cannot work with its configuration "
                    "(see its error above); not restarting it",
                    EXIT_CONFIG,
                )
                status = EXIT_CONFIG
                break
            clean = reason == "exited" and self.proc is not None and self.proc.returncode == 0
            stable = time.monotonic() - started >= STABLE_SECONDS
            failures = 0 if clean or stable else failures + 1  # restarts asked for: no backoff
            delay = min(MAX_BACKOFF_SECONDS, 0.25 * (2**failures)) if failures > 1 else 0.0
            if delay:
                log.warning("worker keeps dying; restarting it in %.1f s", delay)
            if self._stopping.wait(delay):
                break
            self.restarts += 1
        self._stop_child()
        self._remove_directory()
        self.plugins.stop()
        return status

    def restart_worker(self) -> None:
        """Let the worker leave cleanly; the supervising loop starts a fresh one (with the
        environment as it is now)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            log.info("nanny restarting worker %s (a plugin asked)", self.address)
            proc.send_signal(signal.SIGTERM)

    @property
    def local_directory(self) -> str:
        """The directory of the current worker process (files for it go there)."""
        return self.directory or tempfile.gettempdir()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the worker leaves cleanly

    def _start_child(self) -> None:
        self.address = None
        self._address_known.clear()
        self._remove_directory()
        self.directory = tempfile.mkdtemp(prefix="rdist-worker-", dir=self.spill_root)
        read_end, write_end = os.pipe()
        cmd = [
            sys.executable,
            "-m",
            "rdist",
            *self.worker_args,
            "--no-nanny",
            "--nanny-fd",
            str(write_end),
            "--spill-directory",
            self.directory,
        ]
        # the URL is not in argv (see the module doc); nanny plugins may add variables
        env = {**os.environ, **self.env, "RDIST_REDIS_URL": self.url}
        try:
            self.proc = subprocess.Popen(
                cmd, pass_fds=(write_end,), env=env, preexec_fn=die_with_parent
            )
        finally:
            os.close(write_end)
        threading.Thread(
            target=self._read_address, args=(read_end,), daemon=True, name="rdist-nanny-pipe"
        ).start()
        log.info("nanny started worker process %d", self.proc.pid)

    def _read_address(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            line = pipe.readline().decode().strip()
        if line:
            self.address = line
            self._address_known.set()
            self.logs.set_ident(line)
            log.info("nanny's worker process %d is %s", self.proc.pid if self.proc else 0, line)

    def _watch(self) -> str:
        """Wait for the child to end (or be killed for its memory); why it ended."""
        assert self.proc is not None
        if not self.terminate_bytes:
            self.proc.wait()
            return "exited"
        import psutil

        try:
            child = psutil.Process(self.proc.pid)
        except psutil.NoSuchProcess:
            self.proc.wait()
            return "exited"
        while True:
            try:
                self.proc.wait(MEMORY_CHECK_SECONDS)
                return "exited"
            except subprocess.TimeoutExpired:
                pass
            if self._stopping.is_set():
                self.proc.wait()
                return "exited"
            try:
                rss = child.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if rss > self.terminate_bytes:
                log.warning(
                    "worker %s uses %d MB, past %d%% of its %d MB limit: restarting it",
                    self.address or self.proc.pid,
                    rss >> 20,
                    round(100 * self.terminate_bytes / self.memory_limit),
                    self.memory_limit >> 20,
                )
                self.proc.kill()
                self.proc.wait()
                return "memory"

    def _after_death(self, reason: str) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        self._address_known.wait(0.5)  # the pipe may still hold the address
        if code == 0 and reason == "exited":
            log.info("worker %s left cleanly; starting a new one", self.address)
        else:
            log.warning(
                "worker %s died (%s, exit status %s); reporting it and starting a new one",
                self.address,
                reason,
                code,
            )
            if self.address is not None:
                self.report_lost(self.address)
        self._remove_directory()

    def report_lost(self, address: str) -> None:
        """On the dead worker's behalf: the scheduler reschedules its work at once."""
        store = connect(self.url, self.cluster)
        try:
            pipe = store.pipeline()
            store.streams.to_scheduler(WorkerLost(address), pipe)
            store.workers.remove([address], pipe)
            store.streams.drop_worker_streams([address], pipe)
            pipe.execute()
        except ConnectionErrors as exc:
            log.warning(
                "cannot report the death of %s (%s): the heartbeat timeout will", address, exc
            )
        finally:
            store.close()

    def _stop_child(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning(
                "worker %s did not leave within %g s: killing it", self.address, STOP_GRACE_SECONDS
            )
            proc.kill()
            proc.wait()
            if self.address is not None:
                self.report_lost(self.address)

    def _remove_directory(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
