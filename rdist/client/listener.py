"""What the client does with each entry of its stream (the handler its inbox calls).

Every entry is decoded through ``wire.CLIENT`` (a bundle into its messages) and each typed
message goes where it belongs: key notifications to the ledger, answers to whoever waits
for them by request id, the data plane's relay answers to the relay. Entries go through
the stream's :class:`~rdist.store.guard.EntryGuard`: one that does not decode, or whose
handling raises, is logged and set aside on the dead-letter stream with its reason; the
listener thread carries on with the next one.

The stream lives in Redis, which may lose it: the key deleted, the stream trimmed, or Redis
restarted without persistence. Senders never re-create a client's stream (``NOMKSTREAM``: a
departed client's stream must not come back), so what they sent would vanish unseen. The
:class:`StreamWatch` keeps a marker entry as the stream's oldest -- deletion and trimming
remove the oldest first -- and checks every few seconds that it is still there; when it is
gone the watch makes a new marker (and so the stream) and asks the scheduler again for
every key the client still waits on, which answers those already finished at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial

from rdist.client.answers import Answers
from rdist.client.future import PENDING
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
            (
                wire.RunResult,
                wire.StoryReply,
                wire.Gathered,
                wire.PluginReply,
                wire.ActorAnswer,
                wire.AmmReply,
            ),
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


class StreamWatch:
    """Notices that Redis lost entries of the client's stream, and recovers (module doc)."""

    def __init__(
        self,
        store: RedisStore,
        client_id: str,
        ledger: Ledger,
        post: Callable[[wire.Message], None],
        kept: set[bytes],
        stopping: Callable[[], bool],
    ) -> None:
        self._store = store
        self._client_id = client_id
        self._stream = store.keys.client_stream(client_id)
        self._ledger = ledger
        self._post = post  #: sends a message to the scheduler (the client's sender)
        self._kept = kept  #: the inbox's entries never deleted: holds the marker
        self._stopping = stopping  #: the client closes: its stream is about to go
        self._marker: bytes | None = None
        self.recoveries = 0  #: how often the stream was found lost

    def check(self) -> None:
        """Make the marker on the first call; later, recover when it has gone."""
        if self._stopping():
            return
        if self._marker is None:
            self._mark()
        elif not self._store.streams.has_entry(self._stream, self._marker):
            self._recover()

    def _mark(self) -> None:
        marker = self._store.streams.mark_client_stream(self._client_id, wire.Notify([]))
        if self._marker is not None:
            self._kept.discard(self._marker)
        self._kept.add(marker)
        self._marker = marker

    def _recover(self) -> None:
        self.recoveries += 1
        self._mark()
        pending = self._pending_keys()
        log.warning(
            "client %s: Redis lost entries of our stream %s (deleted, trimmed or Redis "
            "restarted empty): stream made again; asking the scheduler again about %d "
            "unfinished keys",
            self._client_id,
            self._stream,
            len(pending),
        )
        if pending:
            self._post(wire.UpdateGraph(self._client_id, wanted=pending))

    def _pending_keys(self) -> list[str]:
        ledger = self._ledger
        return [
            key
            for key in ledger.keys()
            if (state := ledger.holds(key)) is not None and state.status == PENDING
        ]
