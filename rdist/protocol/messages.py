"""Control messages: msgpack maps with an ``op`` field, one per stream entry.

The scheduler only ever decodes these (never pickles). A message that is not a msgpack map
with a known ``op`` raises :class:`MalformedMessage`; readers set such entries aside.
"""

from __future__ import annotations

from typing import Any

import msgpack

#: Largest control message accepted (a graph of ~1M tasks fits well below this).
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


class MalformedMessage(ValueError):
    """A stream entry that is not a valid rdist control message."""


def encode(op: str, **fields: Any) -> bytes:
    fields["op"] = op
    return msgpack.packb(fields, use_bin_type=True)


def decode(payload: bytes | None, known_ops: frozenset[str] | set[str]) -> dict[str, Any]:
    if payload is None:
        raise MalformedMessage("entry has no 'm' field")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        msg = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:
        raise MalformedMessage(f"not msgpack: {exc}") from None
    if not isinstance(msg, dict):
        raise MalformedMessage(f"expected a map, got {type(msg).__name__}")
    op = msg.get("op")
    if op not in known_ops:
        raise MalformedMessage(f"unknown op {op!r}")
    return msg


#: One stream entry carrying several messages, in order.  Redis serves a blocked reader
#: after the first command of a pipeline, so separate entries sent together reach it in
#: separate reads -- each a batch of its own and its own round of wake-ups downstream.
BUNDLE_OP = "bundle"


def bundle(encoded: list[bytes]) -> bytes:
    return encode(BUNDLE_OP, msgs=encoded)


def unbundle(msg: dict[str, Any], known_ops: frozenset[str] | set[str]) -> list[dict[str, Any]]:
    """The messages of a bundle, each checked like a message of its own (no nesting)."""
    parts = msg.get("msgs")
    if not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
        raise MalformedMessage("a bundle carries a list of encoded messages")
    return [decode(p, known_ops) for p in parts]


def pack(obj: Any) -> bytes:
    """msgpack for records stored in hashes (task and worker records)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)
