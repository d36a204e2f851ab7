"""What the client does with each entry of its stream (the handler its inbox calls).

Every entry is decoded through ``wire.CLIENT`` (a bundle into its messages) and each typed
message goes where it belongs: key notifications to the ledger, answers to whoever waits
for them by request id, the data plane's relay answers to the relay. An entry that does
not decode, or whose handling raises, is logged and set aside on the dead-letter stream
with its reason; the listener thread carries on with the next one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from rdist.client.answers import Answers
from rdist.client.ledger import Ledger
from rdist.protocol import wire
from rdist.store import RedisStore
from rdist.store.connection import ConnectionErrors

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

    def on_entry(self, entry_id: bytes, payload: bytes | None) -> None:
        """Handle one entry; never raises (a bad entry is set aside, see the module doc)."""
        try:
            messages = wire.CLIENT.decode(payload, self._stream)
        except wire.MalformedMessage as exc:
            log.error("client %s: setting aside entry %r: %s", self._client_id, entry_id, exc)
            self._set_aside(entry_id, payload, str(exc))
            return
        for msg in messages:
            try:
                self.dispatch(msg)
            except Exception as exc:
                log.exception("client %s: handling %s failed", self._client_id, msg.OP)
                self._set_aside(
                    entry_id, payload, f"handling {msg.OP} failed: {type(exc).__name__}: {exc}"
                )

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

    def _set_aside(self, entry_id: bytes, payload: bytes | None, reason: str) -> None:
        try:
            self._store.streams.dead_letter(self._stream, entry_id, payload, reason)
        except ConnectionErrors as exc:
            log.warning("client %s: cannot set entry %r aside: %s", self._client_id, entry_id, exc)
