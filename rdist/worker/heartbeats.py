"""A worker's heartbeats: its record in the ``workers`` hash (identity and latest metrics)
rewritten, and a sample on the capped ``heartbeats`` stream, every second.

A heartbeat must go on when the process has no descriptor to spare (a task leaking files,
a flood of connections): a worker that stops beating is declared dead and its work
rescheduled, though it is alive. So it needs no new descriptor once started: its Redis
connection is opened at start and kept, memory is read from ``/proc/self/statm`` opened
once (:class:`ProcessMetrics`; psutil opens the file anew on every call), CPU comes from
``os.times()``, disk and network counters from ``/proc/self/io`` and ``/proc/net/dev``
(opened once too), and no failure ends the loop -- it is logged and the next beat tries again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import psutil

from rdist.comm import buffers
from rdist.protocol.wire import Heartbeat, WorkerRecord
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors
from rdist.store.health import Backoff
from rdist.worker import reannounce

if TYPE_CHECKING:
    from rdist.worker.server import Worker

log = logging.getLogger("rdist.worker")

#: While beats keep failing, one log line per this many failures.
LOG_EVERY = 30


class ProcessMetrics:
    """Resident memory and CPU use of this process, without opening a file per sample."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statm: int | None = None
        self._pid = 0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._wall, self._cpu = time.monotonic(), _cpu_seconds()
        self._io_pid = 0
        self._io: int | None = None
        self._net: int | None = None

    def rss(self) -> int:
        with self._lock:
            fd = self._statm_fd()
            if fd is not None:
                try:
                    return int(os.pread(fd, 128, 0).split()[1]) * self._page
                except (OSError, ValueError, IndexError):
                    pass
        return int(psutil.Process().memory_info().rss)  # not Linux: psutil (opens a file)

    def _statm_fd(self) -> int | None:
        """``/proc/self/statm``, opened once per process (a forked child opens its own)."""
        if self._pid != os.getpid():
            self._pid, self._statm = os.getpid(), None
            try:
                self._statm = os.open(f"/proc/{self._pid}/statm", os.O_RDONLY)
            except OSError:
                pass
        return self._statm

    def io_counters(self) -> tuple[int, int, int, int]:
        """(network bytes sent, received; disk bytes read, written), cumulative; zeros
        where the system does not say. The network counters are the host's, without the
        loopback interface: a process has none of its own."""
        with self._lock:
            self._statm_fd()  # a forked child reopens its files
            if self._io_pid != self._pid:
                self._io_pid = self._pid
                self._io = _open_quietly(f"/proc/{self._pid}/io")
                self._net = _open_quietly("/proc/net/dev")
            sent, recv = _net_bytes(self._net)
            read, written = _disk_bytes(self._io)
        return sent, recv, read, written

    def cpu_percent(self) -> float:
        """CPU use since the previous call, in percent of one core (as psutil's)."""
        with self._lock:
            wall, cpu = time.monotonic(), _cpu_seconds()
            elapsed = wall - self._wall
            percent = 100.0 * (cpu - self._cpu) / elapsed if elapsed > 0 else 0.0
            self._wall, self._cpu = wall, cpu
        return round(percent, 1)


def _open_quietly(path: str) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        return None


def _read_all(fd: int | None) -> str:
    if fd is None:
        return ""
    try:
        return os.pread(fd, 65536, 0).decode(errors="replace")
    except OSError:
        return ""


def _net_bytes(fd: int | None) -> tuple[int, int]:
    """Bytes sent and received on every interface but loopback (``/proc/net/dev``)."""
    sent = recv = 0
    for line in _read_all(fd).splitlines()[2:]:
        name, _, numbers = line.partition(":")
        values = numbers.split()
        if name.strip() == "lo" or len(values) < 9:
            continue
        try:
            recv += int(values[0])
            sent += int(values[8])
        except ValueError:
            continue
    return sent, recv


def _disk_bytes(fd: int | None) -> tuple[int, int]:
    """Bytes this process read from and wrote to storage (``/proc/self/io``)."""
    found = {}
    for line in _read_all(fd).splitlines():
        name, _, value = line.partition(":")
        if name in ("read_bytes", "write_bytes"):
            try:
                found[name] = int(value)
            except ValueError:
                pass
    return found.get("read_bytes", 0), found.get("write_bytes", 0)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


PROCESS = ProcessMetrics()


def metrics(worker: Worker) -> Heartbeat:
    # the tasks on a thread now, without the state machine's lock: counting them in the
    # machine walks every task it holds (a million results, once a second, under the
    # lock the stream thread needs)
    executing = len(worker.executor.running)
    data = worker.data
    sent, recv, read, written = PROCESS.io_counters()
    return Heartbeat(
        worker.address,
        PROCESS.rss(),
        PROCESS.cpu_percent(),
        executing,
        len(data),
        data.memory_bytes,
        data.spilled_bytes,
        worker.executed,
        time.time(),
        sent,
        recv,
        read,
        written,
    )


def record(worker: Worker, beat: Heartbeat | None = None) -> WorkerRecord:
    """The worker's record: what it announced on joining, and its latest metrics."""
    info, beat = worker.info(), beat or metrics(worker)
    return WorkerRecord(
        info.address,
        info.name,
        info.nthreads,
        info.memory_limit,
        info.resources,
        info.host,
        info.pid,
        info.status,
        info.started,
        info.transfer,
        beat.memory,
        beat.cpu,
        beat.executing,
        beat.stored,
        beat.stored_bytes,
        beat.spilled_bytes,
        beat.executed,
        beat.last_seen,
        beat.net_sent,
        beat.net_recv,
        beat.disk_read,
        beat.disk_write,
    )


def beat(worker: Worker, store: RedisStore) -> None:
    """One heartbeat: the record and a sample, in one round trip."""
    buffers.POOL.trim()  # receive buffers idle for a while go back to the system
    sample = metrics(worker)
    pipe = store.pipeline()
    store.workers.put(record(worker, sample), pipe)
    store.streams.heartbeat(sample, pipe)
    store.epoch.read(pipe)
    if worker.epoch_watch.changed(pipe.execute()[-1]):
        reannounce.reannounce(worker, store)  # Redis lost data: rebuild it


def run(worker: Worker, store: RedisStore) -> None:
    """Beat until the worker stops, on a connection of its own opened now and kept."""
    try:
        store.ping()
        PROCESS.rss()  # opens /proc/self/statm while descriptors are to be had
        PROCESS.io_counters()  # and the I/O counters' files
    except ConnectionErrors as exc:
        log.warning("worker %s: heartbeat cannot reach Redis yet: %s", worker.address, exc)
    backoff = Backoff(f"worker {worker.address}: heartbeat", store.url, log)
    failures = 0
    while not worker.stop_event.wait(worker.heartbeat_interval):
        try:
            beat(worker, store)
        except ConnectionErrors as exc:
            backoff.failed(exc)  # beats keep their pace; a permanent error raises
        except Exception as exc:  # nothing else may end the heartbeat: silence means death
            if failures % LOG_EVERY == 0:
                log.warning(
                    "worker %s: heartbeat failed (%d in a row): %r",
                    worker.address,
                    failures + 1,
                    exc,
                )
            failures += 1
        else:
            failures = 0
            backoff.succeeded()
    store.close()
