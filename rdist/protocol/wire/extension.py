"""Messages and records of the extension features: shared state, actors and plugins.

- on the ``sched`` stream: :class:`PassKeys` (futures held by a queue item, a variable or
  a dataset change hands) and :class:`RegisterSchedulerPlugin` (a client's scheduler
  plugin, accepted only by a scheduler started with ``--accept-client-plugins``);
- on a worker's stream: :class:`PluginAdded` / :class:`PluginRemoved` and
  :class:`ActorCall` (an actor method called through Redis, where peers cannot reach the
  actor's worker directly);
- on a nanny's stream (``nanny:<id>``, :data:`NANNY`): :class:`PluginAdded` /
  :class:`PluginRemoved`;
- on a client's stream: :class:`PluginReply` and :class:`ActorAnswer`;
- the ``nannies`` hash: :class:`NannyRecord`.

Plugins and actor arguments travel pickled (opaque here); the scheduler unpickles nothing
of them unless it was started to accept client plugins.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rdist.protocol.wire.base import (
    BLOB,
    BOOL,
    NAME,
    NAMES,
    TEXT,
    TIMESTAMP,
    Channel,
    Integer,
    Message,
    Optional,
    Record,
    Text,
    fields,
)

#: Ids of the scheduler's *holders*: pseudo-clients that keep the futures of a queue item,
#: a variable's value or a dataset alive. They have no stream (nobody is notified) and no
#: heartbeat (no holder is ever "lost"); they end only by giving their keys up.
HOLDER_PREFIX = "holder:"

_CLIENT_OR_HOLDER = Text(empty=True)


def is_holder(client: str) -> bool:
    return client.startswith(HOLDER_PREFIX)


# -- to the scheduler ------------------------------------------------------------------------


@dataclass(slots=True)
class PassKeys(Message):
    """Keys change hands: ``taker`` wants them from now on, *then* ``giver`` gives them up
    (so they are never unwanted in between). Either may be ``""``. A client taking keys is
    told at once of those already finished, and of unknown ones as cancelled."""

    OP = "pass-keys"
    keys: list[str]
    taker: str = ""
    giver: str = ""


fields(PassKeys, keys=NAMES, taker=_CLIENT_OR_HOLDER, giver=_CLIENT_OR_HOLDER)


@dataclass(slots=True)
class RegisterSchedulerPlugin(Message):
    """``client.register_plugin(scheduler_plugin)``: answered with a :class:`PluginReply`."""

    OP = "register-plugin"
    client: str
    id: str
    name: str
    plugin: bytes  #: pickled; unpickled only by a scheduler that accepts client plugins
    idempotent: bool = False


fields(RegisterSchedulerPlugin, client=NAME, id=NAME, name=NAME, plugin=BLOB, idempotent=BOOL)


# -- to workers and nannies ------------------------------------------------------------------


@dataclass(slots=True)
class PluginAdded(Message):
    """Set this plugin up (replacing one of the same name); answer ``client`` (if any)
    with a :class:`PluginReply` of this ``id``."""

    OP = "plugin-added"
    id: str
    name: str
    plugin: bytes
    client: str = ""


fields(PluginAdded, id=NAME, name=NAME, plugin=BLOB, client=_CLIENT_OR_HOLDER)


@dataclass(slots=True)
class PluginRemoved(Message):
    """Tear this plugin down and forget it; answer ``client`` (if any) with a
    :class:`PluginReply` of this ``id``."""

    OP = "plugin-removed"
    id: str
    name: str
    client: str = ""


fields(PluginRemoved, id=NAME, name=NAME, client=_CLIENT_OR_HOLDER)


@dataclass(slots=True)
class ActorCall(Message):
    """Call ``method`` of the actor ``key`` here (``attribute``: read it) with the pickled
    ``(args, kwargs)``; answer ``client`` with an :class:`ActorAnswer` of this ``id``."""

    OP = "actor-call"
    id: str
    client: str
    key: str
    method: str
    args: bytes = b""
    attribute: bool = False


fields(ActorCall, id=NAME, client=NAME, key=NAME, method=NAME, args=BLOB, attribute=BOOL)


# -- to clients ------------------------------------------------------------------------------


@dataclass(slots=True)
class PluginReply(Message):
    """How setting a plugin up went on ``source`` (a worker address, a nanny id or
    ``scheduler``): the pickled ``(exception, traceback)`` of a failure in ``error``, or
    a plain ``error_text`` where nothing is pickled (the scheduler refusing)."""

    OP = "plugin-reply"
    id: str
    source: str
    ok: bool
    error: bytes | None = None
    error_text: str | None = None


fields(
    PluginReply,
    id=NAME,
    source=NAME,
    ok=BOOL,
    error=Optional(BLOB),
    error_text=Optional(TEXT),
)


@dataclass(slots=True)
class ActorAnswer(Message):
    """The outcome of an :class:`ActorCall`: the pickled value, or ``(exception, text)``."""

    OP = "actor-answer"
    id: str
    ok: bool
    value: bytes


fields(ActorAnswer, id=NAME, ok=BOOL, value=BLOB)


# -- stored ----------------------------------------------------------------------------------


@dataclass(slots=True)
class NannyRecord(Record):
    """One nanny, in the ``nannies`` hash: refreshed while it lives (``last_seen``)."""

    KIND = "nanny record"
    host: str
    pid: int
    worker: str = ""  #: the address of its worker process, once known
    last_seen: float = 0.0
    nanny_plugins: list[str] = field(default_factory=list)  #: set up here, by name


fields(
    NannyRecord,
    host=TEXT,
    pid=Integer(0, 1 << 32),
    worker=_CLIENT_OR_HOLDER,
    last_seen=TIMESTAMP,
    nanny_plugins=NAMES,
)

#: Everything a nanny's stream may carry.
NANNY = Channel("nanny", PluginAdded, PluginRemoved)

__all__ = [
    "HOLDER_PREFIX",
    "NANNY",
    "ActorAnswer",
    "ActorCall",
    "NannyRecord",
    "PassKeys",
    "PluginAdded",
    "PluginRemoved",
    "PluginReply",
    "RegisterSchedulerPlugin",
    "is_holder",
]
