"""A worker's plugins: set up at start from Redis, added and removed by stream messages,
told of every transition its state machine makes, torn down when it closes.

The hooks run in the worker's shell: after the state machine handled a stimulus, the new
entries of its transition log are handed to every plugin with a ``transition`` hook (in
order, under the worker's lock). With no such plugin the shell skips even that look --
:attr:`WorkerPlugins.watching` is False -- so plugins cost nothing until one is there.

A plugin whose ``setup`` raises is not kept; the failure goes back to the registering
client (``wire.PluginReply``, raised there as dask does) and is logged. A failing
``transition`` or ``teardown`` is logged and ignored.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from rdist.plugins.base import WorkerPlugin, call_hook, has_hook, run_hook
from rdist.protocol import serialize, wire

if TYPE_CHECKING:
    from rdist.store import RedisStore

log = logging.getLogger("rdist.plugins")

#: Errors of tasks kept for ``worker.tasks[key].exception`` (plugins read them there).
KEPT_ERRORS = 1000


def unpickle_plugin(blob: bytes) -> Any:
    return serialize.loads([blob])


def failure_blob(exc: BaseException) -> bytes:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        return serialize.to_blob((exc, text))
    except serialize.SerializationError:
        return serialize.to_blob((RuntimeError(f"{type(exc).__name__}: {exc}"), text))


class WorkerPlugins:
    """The plugins set up on one worker."""

    def __init__(self, worker: Any, store: RedisStore) -> None:
        self._worker = worker
        self._store = store
        self._plugins: dict[str, Any] = {}
        self._registrations: dict[str, str] = {}  #: name -> registration id set up
        self._watchers: list[Any] = []  #: plugins with a transition hook
        #: whether the shell must hand transitions over (any plugin with that hook)
        self.watching = False
        #: recent task errors by key, as serialized (exception, traceback)
        self.errors: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.RLock()

    # -- setting up ----------------------------------------------------------------------------
    def setup_registered(self) -> None:
        """Every plugin registered so far (a worker starting, before it runs tasks)."""
        try:
            registered = self._store.plugins.all("worker")
        except Exception:
            log.exception("worker %s: cannot read the registered plugins", self._worker.address)
            return
        for name, (registration, blob) in registered.items():
            self._set_up(name, registration, blob)  # (a failure is logged there)

    def added(self, msg: wire.PluginAdded) -> None:
        """A plugin registered while we run: set it up (in a thread: it may be slow), then
        answer the client that registered it."""
        threading.Thread(
            target=self._add_and_answer, args=(msg,), name="rdist-plugin", daemon=True
        ).start()

    def _add_and_answer(self, msg: wire.PluginAdded) -> None:
        self._answer(msg, self._set_up(msg.name, msg.id, msg.plugin))

    def _answer(self, msg: wire.PluginAdded | wire.PluginRemoved, error: bytes | None) -> None:
        if not msg.client:
            return
        reply = wire.PluginReply(msg.id, self._worker.address, error is None, error)
        try:
            self._store.streams.to_client(msg.client, reply)
        except Exception:
            log.exception("worker %s: cannot answer %s", self._worker.address, msg.client)

    def _set_up(self, name: str, registration: str, blob: bytes) -> bytes | None:
        """Set the plugin up under ``name`` (replacing an earlier one); the pickled
        failure, or None. The same registration seen twice (at start and on the stream)
        is set up once."""
        with self._lock:
            if self._registrations.get(name) == registration:
                return None
            try:
                plugin = unpickle_plugin(blob)
                self._remove(name)
                run_hook(plugin, "setup", self._worker)
            except Exception as exc:
                log.exception("worker %s: plugin %r failed to set up", self._worker.address, name)
                return failure_blob(exc)
            self._plugins[name] = plugin
            self._registrations[name] = registration
            self._rewatch()
            return None

    def removed(self, msg: wire.PluginRemoved) -> None:
        with self._lock:
            self._remove(msg.name)
            self._rewatch()
        self._answer(msg, None)

    def _remove(self, name: str) -> None:
        plugin = self._plugins.pop(name, None)
        self._registrations.pop(name, None)
        if plugin is not None:
            call_hook(plugin, "teardown", self._worker)

    def _rewatch(self) -> None:
        self._watchers = [
            p for p in self._plugins.values() if has_hook(p, "transition", WorkerPlugin)
        ]
        self.watching = bool(self._watchers)

    def teardown_all(self) -> None:
        with self._lock:
            for name in list(self._plugins):
                self._remove(name)
            self._rewatch()

    def __contains__(self, name: str) -> bool:
        return name in self._plugins

    def get(self, name: str) -> Any:
        return self._plugins.get(name)

    # -- transitions (called by the worker's shell under its lock) -----------------------------
    def note_failures(self, events: tuple[Any, ...]) -> None:
        """Keep the errors of tasks that failed, for ``worker.tasks[key].exception``."""
        for event in events:
            error = getattr(event, "error", None)
            if isinstance(error, bytes) and error:
                self.errors[event.key] = error
                self.errors.move_to_end(event.key)
                if len(self.errors) > KEPT_ERRORS:
                    self.errors.popitem(last=False)

    def transitions(self, log_: deque[tuple[Any, ...]], last: Any) -> None:
        """Hand every log entry after ``last`` (the newest entry before the stimulus) to
        each watching plugin, oldest first."""
        new = list(entries_after(log_, last))
        if not new:
            return
        for plugin in list(self._watchers):
            for key, start, finish, stimulus_id, _ in new:
                try:
                    plugin.transition(key, _state(start), _state(finish), stimulus_id=stimulus_id)
                except Exception:
                    log.exception("plugin %s: transition failed", type(plugin).__name__)


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


def entries_after(log_: deque[Any], last: Any) -> Iterator[Any]:
    """The entries appended to ``log_`` after the entry ``last`` (None: all of them),
    oldest first. Entries are new tuples each, so identity finds the place."""
    found: list[Any] = []
    for entry in reversed(log_):
        if entry is last:
            break
        found.append(entry)
    found.reverse()
    return iter(found)


class TaskView:
    """What a plugin sees of one task on a worker (``worker.tasks[key]``, as dask's)."""

    __slots__ = ("key", "state", "_blob", "_loaded")

    def __init__(self, key: str, state: str, error: bytes | None) -> None:
        self.key = key
        self.state = state
        self._blob = error
        self._loaded: tuple[BaseException, str] | None = None

    def _error(self) -> tuple[BaseException, str] | None:
        if self._loaded is None and self._blob is not None:
            try:
                self._loaded = serialize.from_blob(self._blob)
            except serialize.SerializationError as exc:
                self._loaded = (exc, "")
        return self._loaded

    @property
    def exception(self) -> BaseException | None:
        error = self._error()
        return error[0] if error else None

    @property
    def traceback(self) -> Any:
        """The traceback object, where one survived the trip (often None: see
        :attr:`traceback_text`)."""
        error = self._error()
        return error[0].__traceback__ if error else None

    @property
    def traceback_text(self) -> str:
        error = self._error()
        return error[1] if error else ""

    @property
    def exception_text(self) -> str:
        exc = self.exception
        return f"{type(exc).__name__}: {exc}" if exc is not None else ""

    def __repr__(self) -> str:
        return f"<TaskView {self.key!r} {self.state}>"


class TaskViews(Mapping[str, TaskView]):
    """``worker.tasks``: the worker's tasks (and those that recently failed here)."""

    def __init__(self, tasks: Mapping[str, Any], errors: Mapping[str, bytes]) -> None:
        self._tasks = tasks
        self._errors = errors

    def __getitem__(self, key: str) -> TaskView:
        ts = self._tasks.get(key)
        if ts is None and key not in self._errors:
            raise KeyError(key)
        state = _state(ts.state) if ts is not None else "error"
        return TaskView(key, state, self._errors.get(key))

    def __iter__(self) -> Iterator[str]:
        yield from list(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)
