"""The guard every stream loop reads through: no entry stops a loop.

Each entry is decoded by its stream's wire channel and handled inside the guard. An entry
that does not decode (:class:`~rdist.protocol.wire.MalformedMessage`), or whose handler
raises, goes to the dead-letter stream with the reason, the stream and id it came from and
the exception; the loop goes on with the next entry. A lost Redis connection is nobody's
entry's fault: it propagates, and the loops retry as they always do.

An entry whose handling kills the whole process (a segfault in an extension, the kernel's
OOM killer, ``os._exit`` in a plugin) is never acknowledged: it stays in the consumer
group's pending list, and every restarted process would read it again and die again.
Redis counts the deliveries of pending entries. The loops re-read their own pending
entries one at a time (:meth:`RedisStore.read_own_pending`), so an entry's count says how
often *its* handling was tried and never finished; one delivered
:data:`MAX_DELIVERIES` times already is set aside unhandled -- a restart cannot loop on it.
Deliveries the process knows were no attempt are not held against an entry: those of a
read whose reply was lost (Redis going away as it answered: the entry is newer than any
this process received) and those of entries whose handling stopped for want of Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from rdist.protocol import wire
from rdist.store.connection import ConnectionErrors

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

#: An entry delivered this often without being acknowledged is set aside, not handled:
#: its handling failed (or took the process down) every time it was tried.
MAX_DELIVERIES = 2


def entry_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id ``<ms>-<n>`` as a tuple that orders like the stream."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


class DeadLetter(NamedTuple):
    entry_id: bytes
    raw: Any
    reason: str
    error: BaseException | None
    deliveries: int


class EntryGuard:
    """Decodes and handles the entries of one stream; sets aside what fails.

    With ``deferred`` the dead letters wait for the loop's next pipeline (:meth:`take`,
    :meth:`write`): the scheduler sends everything a batch decided in one round trip.
    Otherwise each is written at once. ``passes`` are the exceptions a handler may raise
    through the guard (a loop that cannot retry an entry passes none).
    """

    def __init__(
        self,
        store: RedisStore,
        stream: str,
        who: str,
        log: logging.Logger,
        deferred: bool = False,
        passes: tuple[type[BaseException], ...] = ConnectionErrors,
    ) -> None:
        self._store = store
        #: what a handler may raise through the guard (a lost connection, by default: the
        #: loop retries the entry once Redis is back)
        self._passes = passes
        self.stream = stream
        self.who = who  #: the reader, in log lines ("scheduler", "worker tcp://...")
        self._log = log
        self._deferred = deferred
        self._letters: list[DeadLetter] = []
        self.refused = 0  #: entries set aside by this guard
        #: the newest entry a read of new entries delivered to this process
        self._newest: tuple[int, int] | None = None
        #: deliveries of an entry caused by this process's own retries (Redis was away)
        self._excused: dict[bytes, int] = {}

    def decode(self, channel: wire.Channel, entry_id: bytes, payload: Any) -> list[wire.Message]:
        """The entry's messages, or ``[]`` when it does not decode (then it is set aside)."""
        try:
            return channel.decode(payload, self.stream)
        except wire.MalformedMessage as exc:
            self.refuse(entry_id, payload, str(exc), exc)
            return []

    def call(self, entry_id: bytes, payload: Any, what: str, fn: Callable[[], Any]) -> bool:
        """Run ``fn`` (the handling of this entry); False when it raised (set aside)."""
        try:
            fn()
            return True
        except self._passes:
            raise
        except Exception as exc:  # a bug or an input no check foresaw: never the loop's end
            self._log.exception("%s: %s entry %r failed", self.who, what, entry_id)
            reason = f"handler raised {type(exc).__name__}: {exc} ({what})"
            self.refuse(entry_id, payload, reason, exc)
            return False

    def received(self, entries: list[tuple[bytes, Any]]) -> None:
        """Entries a read of new entries delivered (the newest of them is remembered)."""
        if entries:
            newest = entry_order(entries[-1][0])
            if self._newest is None or newest > self._newest:
                self._newest = newest

    def excuse(self, entry_ids: list[bytes]) -> None:
        """These entries were received, but their handling stopped because Redis went away:
        they come again, and that delivery is no sign of a bad entry."""
        for entry_id in entry_ids:
            self._excused[entry_id] = self._excused.get(entry_id, 0) + 1

    def too_often(self, entry_id: bytes, payload: Any, deliveries: int) -> bool:
        """Whether an entry re-read from the pending list failed too often to try again
        (then it is set aside)."""
        if deliveries >= MAX_DELIVERIES and self._newest is not None:
            if entry_order(entry_id) > self._newest:
                deliveries = 1  # delivered only by reads whose replies never reached us
        deliveries -= self._excused.pop(entry_id, 0)
        if deliveries < MAX_DELIVERIES:
            return False
        reason = (
            f"delivered {deliveries} times and never acknowledged: its handling failed or "
            "took the process down each time, so it is set aside unhandled"
        )
        self.refuse(entry_id, payload, reason, deliveries=deliveries)
        return True

    def refuse(
        self,
        entry_id: bytes,
        payload: Any,
        reason: str,
        error: BaseException | None = None,
        deliveries: int = 1,
    ) -> None:
        """Set one entry aside on the dead-letter stream."""
        self.refused += 1
        self._log.error(
            "%s: setting aside entry %r of %s: %s", self.who, entry_id, self.stream, reason
        )
        letter = DeadLetter(entry_id, payload, reason, error, deliveries)
        if self._deferred:
            self._letters.append(letter)
            return
        try:
            self.write([letter])
        except ConnectionErrors as exc:
            self._log.warning("%s: cannot set entry %r aside: %s", self.who, entry_id, exc)

    def take(self) -> list[DeadLetter]:
        """The deferred dead letters, for the next pipeline."""
        letters, self._letters = self._letters, []
        return letters

    def write(self, letters: list[DeadLetter], pipe: Any = None) -> None:
        streams = self._store.streams
        for letter in letters:
            streams.dead_letter(
                self.stream,
                letter.entry_id,
                letter.raw if letter.raw is not None else b"",
                letter.reason,
                pipe,
                error=letter.error,
                deliveries=letter.deliveries,
            )
