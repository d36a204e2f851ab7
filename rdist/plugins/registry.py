"""Registering plugins, from a client (``client.register_plugin``).

A worker or nanny plugin is pickled into ``plugins:worker`` / ``plugins:nanny`` first --
every worker (nanny) that starts from then on sets it up -- then sent to every one alive
now, on its stream, and their answers are awaited: a ``setup`` that raised there is raised
here, as dask does. A worker that starts between the two steps hears of the plugin both
ways and sets it up once (the registration id tells).

A scheduler plugin goes to the scheduler on its stream; only a scheduler started with
``--accept-client-plugins`` unpickles it. Any other answers with the reason and the two
ways to get a scheduler plugin: the scheduler's own configuration, or that flag.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from rdist.plugins.base import NANNY, SCHEDULER, WORKER, kind_of, plugin_name
from rdist.protocol import serialize, wire

if TYPE_CHECKING:
    from rdist.store import RedisStore


class Answers(Protocol):
    """What the registry needs of the client's answers (``rdist.client.answers.Answers``)."""

    def expect(self, expected: int = 1, request_id: str | None = None) -> str: ...

    def first(self, request_id: str, timeout: float) -> Any: ...

    def arrived(self, request_id: str) -> list[Any]: ...

    def one(self, request_id: str, timeout: float) -> Any: ...

    def forget(self, request_id: str) -> None: ...


#: How long to wait for every worker to set a plugin up (a pip install may take a while).
SETUP_TIMEOUT = 300.0
#: While waiting, how often to look for targets that left (they will never answer).
ALIVE_CHECK_SECONDS = 1.0
#: A nanny silent (no refreshed record) for this long is taken for dead.
NANNY_TTL_SECONDS = 30.0

Post = Callable[[wire.Message], None]


class PluginRegistry:
    """One client's plugin registrations."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        answers: Answers,
        post: Post,
        timeout: Callable[[], float],
    ) -> None:
        self._store = store
        self._client_id = client_id
        self._answers = answers
        self._post = post  #: to the scheduler, in order with the client's other messages
        self._timeout = timeout

    # -- registering ---------------------------------------------------------------------------
    def register(
        self, plugin: Any, name: str | None = None, idempotent: bool | None = None
    ) -> dict[str, Any]:
        """Register ``plugin`` where its kind says; ``{target: {"status": "OK"}}``."""
        as_registered = getattr(plugin, "as_registered", None)
        if as_registered is not None:  # e.g. PipInstall(restart_workers=True): a nanny's job
            plugin = as_registered()
        kind = kind_of(plugin)
        name = plugin_name(plugin, name)
        if idempotent is None:
            idempotent = bool(getattr(plugin, "idempotent", False))
        try:
            blob = serialize.dumps_function(plugin)
        except serialize.SerializationError as exc:
            raise TypeError(f"plugin {name!r} cannot be pickled: {exc}") from None
        if kind == SCHEDULER:
            return self._register_on_scheduler(name, blob, idempotent)
        if idempotent and self._store.plugins.exists(kind, name):
            return {}
        registration = uuid.uuid4().hex
        self._store.plugins.put(kind, name, registration, blob)
        msg = wire.PluginAdded(registration, name, blob, self._client_id)
        return self._broadcast(kind, registration, msg)

    def unregister(self, name: str, nanny: bool | None = None) -> dict[str, Any]:
        """Forget a worker (or nanny) plugin; everyone tears it down. ValueError when no
        plugin of that name is registered."""
        kind = NANNY if nanny else WORKER
        if not self._store.plugins.remove(kind, name):
            raise ValueError(f"the {kind} plugin {name!r} does not exist")
        request = uuid.uuid4().hex
        return self._broadcast(kind, request, wire.PluginRemoved(request, name, self._client_id))

    # -- workers and nannies ---------------------------------------------------------------------
    def _targets(self, kind: str) -> list[str]:
        if kind == WORKER:
            return sorted(self._store.workers.all())
        now = time.time()
        return sorted(
            nanny_id
            for nanny_id, record in self._store.plugins.nannies().items()
            if now - record.last_seen <= NANNY_TTL_SECONDS
        )

    def _send(self, kind: str, target: str, msg: wire.Message, pipe: Any) -> None:
        if kind == WORKER:
            self._store.streams.to_worker(target, msg, pipe)
        else:
            self._store.plugins.to_nanny(target, msg, pipe)

    def _broadcast(
        self, kind: str, registration: str, msg: wire.PluginAdded | wire.PluginRemoved
    ) -> dict[str, Any]:
        targets = self._targets(kind)
        event = wire.ClusterEvent(  # the dashboard's events page lists plugin changes
            "plugin-added" if isinstance(msg, wire.PluginAdded) else "plugin-removed",
            {"plugin": msg.name, "kind": kind, "client": self._client_id, "targets": len(targets)},
        )
        if not targets:
            self._store.streams.log_event(event)
            return {}
        self._answers.expect(len(targets), registration)
        try:
            pipe = self._store.pipeline()
            for target in targets:
                self._send(kind, target, msg, pipe)
            self._store.streams.log_event(event, pipe)
            pipe.execute()
            replies = self._collect(kind, registration, targets)
        finally:
            self._answers.forget(registration)
        return _responses(msg.name, replies)

    def _collect(self, kind: str, registration: str, targets: list[str]) -> list[wire.PluginReply]:
        """Every answer, waiting until all targets still alive have answered."""
        deadline = time.monotonic() + SETUP_TIMEOUT
        waiting = set(targets)
        while True:
            if self._answers.first(registration, ALIVE_CHECK_SECONDS) is not None:
                break  # all answered
            replies = self._answers.arrived(registration)
            waiting = (waiting - {r.source for r in replies}) & set(self._targets(kind))
            if not waiting:
                break
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no answer from {sorted(waiting)} setting plugin up within {SETUP_TIMEOUT:g} s"
                )
        answered: list[wire.PluginReply] = self._answers.arrived(registration)
        return answered

    # -- the scheduler ---------------------------------------------------------------------------
    def _register_on_scheduler(self, name: str, blob: bytes, idempotent: bool) -> dict[str, Any]:
        request_id = self._answers.expect(1)
        self._post(
            wire.RegisterSchedulerPlugin(self._client_id, request_id, name, blob, idempotent)
        )
        timeout = self._timeout()
        try:
            reply: wire.PluginReply = self._answers.one(request_id, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"no scheduler answered the registration of plugin {name!r} within "
                f"{timeout:g} s: is one running?"
            ) from None
        return _responses(name, [reply])


def _responses(name: str, replies: list[wire.PluginReply]) -> dict[str, Any]:
    """dask's answer: ``{source: {"status": "OK"}}``; the first failure is raised."""
    out: dict[str, Any] = {}
    first_error: BaseException | None = None
    for reply in replies:
        if reply.ok:
            out[reply.source] = {"status": "OK"}
            continue
        exc = _failure(name, reply)
        out[reply.source] = {"status": "error", "exception": exc}
        first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return out


def _failure(name: str, reply: wire.PluginReply) -> BaseException:
    if reply.error is not None:
        try:
            exc, text = serialize.from_blob(reply.error)
        except serialize.SerializationError as err:
            return RuntimeError(f"plugin {name!r} failed on {reply.source}: {err}")
        if text and hasattr(exc, "add_note"):
            exc.add_note(f"Remote traceback (plugin {name!r} on {reply.source}):\n{text.rstrip()}")
        return exc  # type: ignore[no-any-return]
    return RuntimeError(reply.error_text or f"plugin {name!r} failed on {reply.source}")
