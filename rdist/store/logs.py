"""The façade for the log buffers: each process's last lines, as capped Redis lists.

A process appends its new lines in one pipeline per flush (RPUSH of the batch, LTRIM to
its length, EXPIRE), never one round trip per line; readers take the tail of many lists
in one pipeline. See ``logs:<role>:<id>`` in :mod:`rdist.store.keys`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rdist.protocol.wire import LogLine, MalformedMessage

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

log = logging.getLogger("rdist.store")

#: A log list expires this long after its last write: the lines of a process that died
#: stay readable for a bug report a while, and a churn of restarted workers cannot grow
#: Redis without bound. A live process renews it (see rdist.logbuffer).
LOG_TTL_SECONDS = 3600


class Logs:
    """``logs:<role>:<id>`` lists of :class:`~rdist.protocol.wire.LogLine`."""

    __slots__ = ("_store", "keys")

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self.keys = store.keys

    def append(
        self,
        role: str,
        ident: str,
        lines: Sequence[bytes],
        length: int,
        pipe: Any = None,
        replace: bool = False,
    ) -> None:
        """Encoded lines at the end of the list, which keeps its last ``length``
        (``replace``: the lines are the whole list now)."""
        target = pipe if pipe is not None else self._store.pipeline()
        key = self._key(role, ident)
        if replace:
            target.delete(key)
        if lines:
            target.rpush(key, *lines)
            target.ltrim(key, -length, -1)
        target.expire(key, LOG_TTL_SECONDS)
        if pipe is None:
            target.execute()

    def _key(self, role: str, ident: str) -> str:
        """The list of one process: ``role`` is ``worker``, ``nanny`` or ``scheduler``."""
        keys = self.keys
        by_role = {"worker": keys.worker_log, "nanny": keys.nanny_log}
        by_role["scheduler"] = keys.scheduler_log
        if role not in by_role:
            raise ValueError(f"no log list for role {role!r}: one of {sorted(by_role)}")
        return by_role[role](ident)

    def set_current_scheduler(self, token: str, pipe: Any = None) -> None:
        """Whose list ``get_scheduler_logs`` reads: the scheduler that leads (or led) last."""
        target = pipe if pipe is not None else self._store.redis
        target.set(self.keys.current_scheduler_log, token)

    def current_scheduler(self) -> str | None:
        raw = self._store.redis.get(self.keys.current_scheduler_log)
        return raw.decode() if isinstance(raw, bytes) else raw

    def tails(self, role: str, idents: Iterable[str], n: int | None) -> dict[str, list[LogLine]]:
        """The last ``n`` lines (all with None) of each process, oldest first, in one round
        trip; a line that does not decode is skipped (and logged)."""
        idents = list(idents)
        pipe = self._store.pipeline()
        for ident in idents:
            pipe.lrange(self._key(role, ident), -n if n else 0, -1)
        out: dict[str, list[LogLine]] = {}
        for ident, raws in zip(idents, pipe.execute(), strict=True):
            out[ident] = [line for raw in raws if (line := _decoded(raw, role, ident)) is not None]
        return out


def _decoded(raw: bytes, role: str, ident: str) -> LogLine | None:
    try:
        return LogLine.decode(raw, f"logs:{role}:{ident}")
    except MalformedMessage as exc:
        log.warning("skipped a log line that does not decode: %s", exc)
        return None
