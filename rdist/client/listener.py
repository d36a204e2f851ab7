"""What the client does with each entry of its stream (the handler its inbox calls).

Every entry is decoded through ``wire.CLIENT`` (a bundle into its messages) and each typed
message goes where it belongs: key notifications to the ledger, answers to whoever waits
for them by request id, the data plane's relay answers to the relay. Entries go through
the stream's :class:`~rdist.store.guard.EntryGuard`: one that does not decode, or whose
handling raises, is logged and set aside on the dead-letter stream with its reason; the
listener thread carries on with the next one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from rdist.client.answers import Answers
from rdist.client.ledger import Ledger
from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.guard import EntryGuard

log = logging.getLogger("rdist.client")


class Listener:
    """Dispatches the messages of one client's stream."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        ledger: Ledger,
        answers: Answers,
        relay_reply: Callable[[wire.Published | wire.Loaded], None],
        restarted: threading.Event,
    ) -> None:
        self._store = store
        self._client_id = client_id
        self._stream = store.keys.client_stream(client_id)
        self._ledger = ledger
        self._answers = answers
        self._relay_reply = relay_reply  #: ``published`` / ``loaded``: the relay's answers
        self._restarted = restarted
        #: (an entry is handled once, its cursor moved on: nothing a handler raises, a
        #: lost connection included, may pass the guard)
        self.guard = EntryGuard(store, self._stream, f"client {client_id}", log, passes=())

    def on_entry(self, entry_id: bytes, payload: bytes | None) -> None:
        """Handle one entry; never raises (a bad entry is set aside, see the module doc)."""
        guard = self.guard
        for msg in guard.decode(wire.CLIENT, entry_id, payload):
            guard.call(entry_id, payload, f"handling {msg.OP}", partial(self.dispatch, msg))

    def dispatch(self, msg: wire.Message) -> None:
        if isinstance(msg, wire.Notify):
            self._notify(msg)
        elif isinstance(
            msg,
            (wire.RunResult, wire.StoryReply, wire.Gathered, wire.PluginReply, wire.ActorAnswer),
        ):
            self._answers.resolve(msg.id, msg)
        elif isinstance(msg, wire.Restarted):
            self._restarted.set()
        elif isinstance(msg, (wire.Published, wire.Loaded)):
            self._relay_reply(msg)
        else:  # a message of the client channel that no client request asks for
            log.warning("client %s: ignoring unexpected %s", self._client_id, msg.OP)

    def _notify(self, msg: wire.Notify) -> None:
        items = msg.items
        self._ledger.settle(items)
        for item in items:
            if type(item) is wire.BarrierReached:  # the scheduler's answer to a barrier
                self._answers.resolve(item.id, item)
