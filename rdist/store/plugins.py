"""The plugins' Redis side: registered plugins by kind, and the nannies that set them up.

``plugins:<kind>`` hashes hold ``name -> msgpack [registration id, pickled plugin]``
(kinds ``worker``, ``nanny``, ``scheduler``); a process starting sets up every plugin of
its kind, and one already running hears of new ones on its stream (the id tells a plugin
it set up already from a new registration of the same name). ``nannies`` holds a
:class:`~rdist.protocol.wire.NannyRecord` per live nanny, refreshed while it lives.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgpack

from rdist.protocol import wire

if TYPE_CHECKING:
    from rdist.store.connection import RedisStore

log = logging.getLogger("rdist.store")

KINDS = ("worker", "nanny", "scheduler")


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Plugins:
    """Registered plugins and live nannies of one cluster."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._keys = store.keys

    def _hash(self, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"plugin kind must be one of {KINDS}, not {kind!r}")
        return self._keys.plugins(kind)

    # -- registered plugins ----------------------------------------------------------------
    def put(self, kind: str, name: str, registration: str, plugin: bytes, pipe: Any = None) -> None:
        packed = msgpack.packb([registration, plugin], use_bin_type=True)
        (pipe if pipe is not None else self._store.redis).hset(self._hash(kind), name, packed)

    def exists(self, kind: str, name: str) -> bool:
        return bool(self._store.redis.hexists(self._hash(kind), name))

    def remove(self, kind: str, name: str) -> bool:
        """True when a plugin of that name was registered."""
        return bool(self._store.redis.hdel(self._hash(kind), name))

    def all(self, kind: str) -> dict[str, tuple[str, bytes]]:
        """name -> (registration id, pickled plugin); a malformed entry is skipped."""
        out: dict[str, tuple[str, bytes]] = {}
        for raw_name, raw in self._store.redis.hgetall(self._hash(kind)).items():
            name = _text(raw_name)
            try:
                registration, plugin = msgpack.unpackb(raw, raw=False)
                if not isinstance(registration, str) or not isinstance(plugin, bytes):
                    raise TypeError("expected [id, bytes]")
            except Exception as exc:
                log.error("plugins:%s: skipping the malformed entry %r: %s", kind, name, exc)
                continue
            out[name] = (registration, plugin)
        return out

    # -- nannies ---------------------------------------------------------------------------
    def announce_nanny(self, nanny_id: str, record: wire.NannyRecord, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self._store.redis
        target.hset(self._keys.nannies, nanny_id, record.encode())

    def remove_nanny(self, nanny_id: str, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self._store.redis
        target.hdel(self._keys.nannies, nanny_id)
        target.delete(self._keys.nanny_stream(nanny_id))

    def nannies(self) -> dict[str, wire.NannyRecord]:
        out: dict[str, wire.NannyRecord] = {}
        for raw_id, raw in self._store.redis.hgetall(self._keys.nannies).items():
            nanny_id = _text(raw_id)
            try:
                out[nanny_id] = wire.NannyRecord.decode(raw, "nannies")
            except wire.MalformedMessage as exc:
                log.error("nannies: skipping the record of %s: %s", nanny_id, exc)
        return out

    def to_nanny(self, nanny_id: str, msg: wire.Message, pipe: Any = None) -> None:
        target = pipe if pipe is not None else self._store.redis
        target.xadd(
            self._keys.nanny_stream(nanny_id),
            {"m": msg.encode()},
            maxlen=1000,
            approximate=True,
        )

    def read_nanny_stream(self, nanny_id: str, after: str, block_ms: int) -> list[tuple[str, Any]]:
        """Entries of the nanny's stream after id ``after`` (blocking up to ``block_ms``)."""
        reply = self._store.redis.xread(
            {self._keys.nanny_stream(nanny_id): after}, count=100, block=block_ms
        )
        out: list[tuple[str, Any]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append((_text(entry_id), fields.get(b"m") if fields else None))
        return out
