"""The worker's sampling profiler: call stacks of running tasks, per task group.

A thread wakes every :data:`INTERVAL` seconds *while tasks run* (it sleeps on an event
while the worker is idle, so an idle worker costs nothing), takes the stacks of the
executing threads from ``sys._current_frames()``, cuts them at the task's function (the
executor's own frames are the same for every task), and folds them into one call tree per
task group (:class:`~rdist.protocol.profile.TreeBuilder`). About once a :data:`CYCLE` it
appends what it gathered as one :class:`~rdist.protocol.wire.ProfileBatch` on the
``profile`` stream -- one Redis command per second of work, on a connection of its own,
never on a task's path. Trees are capped in depth and nodes; the stream in entries.

The executor marks a thread's task with :meth:`Profiler.begin` / :meth:`Profiler.end`: a
dict write each, the whole cost on a task's path. ``RDIST_PROFILE_INTERVAL`` sets the
sampling period in seconds; ``0`` (or ``off``) turns the profiler off.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from rdist.protocol import spec
from rdist.protocol.groups import key_split
from rdist.protocol.profile import Frame, TreeBuilder
from rdist.protocol.wire import ProfileBatch
from rdist.store.connection import ConnectionErrors

if TYPE_CHECKING:
    from rdist.store import RedisStore

log = logging.getLogger("rdist.worker")

#: Seconds between two samples while a task runs (dask samples every 10 ms, too).
INTERVAL = 0.01
#: Seconds between two batches sent (while there are samples to send).
CYCLE = 1.0
#: When the worker goes idle, samples are sent at once unless the last send is this recent.
IDLE_FLUSH_SPACING = 0.25
#: Seconds the sampler keeps looking every period after the last task began, before it
#: sleeps until the next one: a worker running short tasks one after another (a client
#: waiting on each result) would otherwise wake it for every task -- a thread switch and a
#: GIL hand-off on each task's path.
LINGER = 0.5
#: While lingering, looks that find no task running (tasks of microseconds between a
#: client's waits) stretch the period: after this many in a row it is
#: :data:`SLOW_FACTOR` times longer, until a look finds a task running again. A long task
#: is then found within that longer period and sampled every :data:`INTERVAL` from there.
EMPTY_LOOKS = 3
SLOW_FACTOR = 5
#: Frames of this file run every task: a stack is cut where they begin.
_SPEC_FILE = spec.__file__
_UNSEEN: Any = object()


def interval_from_env() -> float:
    """``RDIST_PROFILE_INTERVAL`` (seconds), :data:`INTERVAL` when unset; 0 means off."""
    raw = os.environ.get("RDIST_PROFILE_INTERVAL", "").strip().lower()
    if raw in ("", "on"):
        return INTERVAL
    if raw in ("off", "false", "no"):
        return 0.0
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"RDIST_PROFILE_INTERVAL must be seconds or 'off', not {raw!r}") from None


class Profiler:
    """Samples the stacks of the threads running tasks; see the module docstring."""

    def __init__(
        self,
        address: str,
        store: RedisStore,
        stop: threading.Event,
        interval: float = INTERVAL,
        cycle: float = CYCLE,
    ) -> None:
        self.address = address
        self.store = store  #: a connection of its own
        self.interval = interval
        self.cycle = cycle
        self.enabled = interval > 0
        self._stop = stop
        #: thread ident -> key of the task it runs (written by the executor threads)
        self._running: dict[int, str] = {}
        self._work = threading.Event()  #: set when a task starts while we sleep
        self._sleeping = False
        self._begun = 0  #: tasks begun (only its changes matter: a lost += is harmless)
        self._trees: dict[str, TreeBuilder] = {}
        self._samples = 0
        self._since = time.time()
        #: id(code) -> its frame identity (None for the executor's frames), and the code
        self._frames: dict[int, Frame | None] = {}
        self._codes: dict[int, CodeType] = {}
        self._flushed = time.monotonic()
        #: thread ident -> (innermost frame, key, tree nodes) of its last sample
        self._last: dict[int, tuple[FrameType, str, list[Any]]] = {}

    # -- the executor's side (hot: keep it a dict write) ------------------------------------
    def begin(self, key: str, ident: int | None = None) -> None:
        """The thread ``ident`` (this one by default) starts running ``key``."""
        if self.enabled:
            self._running[threading.get_ident() if ident is None else ident] = key
            self._begun += 1
            if self._sleeping:
                self._work.set()

    def end(self, ident: int | None = None) -> None:
        if self.enabled:
            self._running.pop(threading.get_ident() if ident is None else ident, None)

    # -- the sampler thread --------------------------------------------------------------------
    def run(self) -> None:
        if not self.enabled:
            return
        stop, next_flush = self._stop, time.monotonic() + self.cycle
        seen, linger_until = self._begun, 0.0
        empty = 0  #: looks in a row that found no task running
        while not stop.is_set():
            try:
                if self._running:
                    self.sample()
                    empty = 0
                elif self._begun != seen or time.monotonic() < linger_until:
                    if self._begun != seen:  # tasks ran since the last look
                        seen, linger_until = self._begun, time.monotonic() + LINGER
                    empty += 1
                    self._flush_if_idle_long_enough()
                else:
                    self._sleep_until_work(next_flush)
                    empty = 0
                if time.monotonic() >= next_flush:
                    self.flush()
                    next_flush = time.monotonic() + self.cycle
            except Exception:  # no sample is worth a worker: log it, keep sampling
                log.exception("worker %s: profiler sample failed", self.address)
            # one period between two looks, also right after a task woke us: a task
            # shorter than that ends unsampled, and tasks that start meanwhile wake nobody
            # (so a stream of tiny tasks costs at most one wake-up per period)
            stop.wait(self.interval * (SLOW_FACTOR if empty >= EMPTY_LOOKS else 1))
        self.flush()

    def stop(self) -> None:
        """Wake the sampler so that it sees the worker's stop flag (it may be idle)."""
        self._work.set()

    def _flush_if_idle_long_enough(self) -> None:
        if self._samples and time.monotonic() - self._flushed >= IDLE_FLUSH_SPACING:
            self.flush()

    def _sleep_until_work(self, next_flush: float) -> None:
        """Idle: send what was gathered when the last send is a while ago (a computation
        that just ended is then in Redis at once, for its performance report), and wait
        for a task to start (or the next flush, when samples wait to go)."""
        self._flush_if_idle_long_enough()
        self._last.clear()  # no frame kept alive while idle
        self._sleeping = True
        self._work.clear()
        if not self._running:  # (a task that began before the flag was set is seen here)
            timeout = max(0.0, next_flush - time.monotonic()) if self._samples else None
            self._work.wait(timeout if timeout is not None else self.cycle * 30)
        self._sleeping = False

    def sample(self) -> None:
        """One sample of every thread running a task."""
        running = self._running.copy().items()  # (one C call: atomic under the GIL)
        if not running:
            return
        frames = sys._current_frames()
        last = self._last
        for ident, key in running:
            frame = frames.get(ident)
            if frame is None:
                continue
            self._samples += 1
            seen = last.get(ident)
            if seen is not None and seen[0] is frame and seen[1] == key:
                # the same innermost frame, still running: the same stack (the callers of
                # a live frame cannot change) -- count its nodes again, no walk
                TreeBuilder.add_again(seen[2])
                continue
            group = key_split(key)
            tree = self._trees.get(group)
            if tree is None:
                tree = self._trees[group] = TreeBuilder()
            last[ident] = (frame, key, tree.add(self._stack(frame)))
        if len(last) > len(running):  # threads that finished their task: let go of frames
            for ident in [i for i in last if i not in self._running]:
                del last[ident]
        del frames

    def _stack(self, frame: FrameType | None) -> list[Frame]:
        """The task's frames, outermost first, from its function inwards.

        Code objects are looked up by ``id``: hashing a code object hashes its constants
        and names (most of a sample's cost); the code is kept in ``_codes`` so that its id
        stays its own."""
        known = self._frames
        out: list[Frame] = []
        while frame is not None:
            code = frame.f_code
            ident = known.get(id(code), _UNSEEN)
            if ident is _UNSEEN:
                ident = self._remember(code)
            if ident is None:  # the executor's frames begin here
                out.reverse()
                return out
            out.append(ident)
            frame = frame.f_back
        return []  # no spec frame: not inside a task's function (between two tasks)

    def _remember(self, code: CodeType) -> Frame | None:
        ident = (
            None
            if code.co_filename == _SPEC_FILE
            else (code.co_name, code.co_filename, code.co_firstlineno)
        )
        self._frames[id(code)] = ident
        self._codes[id(code)] = code
        return ident

    def take(self) -> ProfileBatch | None:
        """What was gathered since the last batch (None when nothing), and start afresh."""
        now = time.time()
        if not self._samples:
            self._since = now
            return None
        trees, self._trees = self._trees, {}
        self._last.clear()  # its nodes belong to the trees taken
        batch = ProfileBatch(
            self.address,
            self._since,
            now,
            self._samples,
            {group: tree.tree() for group, tree in trees.items()},
        )
        self._samples, self._since = 0, now
        if len(self._frames) > 100_000:  # code objects of many short-lived lambdas
            self._frames.clear()
            self._codes.clear()
        return batch

    def flush(self) -> None:
        self._flushed = time.monotonic()
        batch = self.take()
        if batch is None:
            return
        try:
            self.store.profiles.add(batch)
        except ConnectionErrors as exc:  # a profile is for people: drop it, never block
            log.debug("worker %s: profile batch dropped: %s", self.address, exc)
