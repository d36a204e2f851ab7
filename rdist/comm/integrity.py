"""Tags that authenticate every data-plane message on plain TCP (see :mod:`rdist.comm.tcp`).

Each direction of a connection has its own 32-byte key (:class:`~rdist.comm.handshake.
SessionKeys`), from which two keys are derived: one for HMAC-SHA256, one for GMAC
(AES-256-GCM over associated data only, no plaintext). A message's tags::

    head tag   = HMAC(counter, length, header)
    frames tag = HMAC(counter, length, header, body)

where the body is, frame by frame, a small frame's bytes themselves, and for a large frame
(:data:`BULK_FRAME` bytes or more) the GMAC tag of each of its :data:`CHUNK`-byte pieces,
under the nonce ``(message counter, piece number)``. The counter counts the messages of
one direction, so nothing can be replayed, dropped or reordered, and no GMAC nonce repeats
under one key. The header carries every frame's length, so both ends cut the same pieces.

Why GMAC for the bulk: hashing 200 MB with HMAC-SHA256 costs ~0.17 s of CPU on each end
here (~1.2 GB/s with the SHA extensions), about as much as the kernel's whole loopback
transfer; GHASH runs on the carry-less multiply instructions at ~10 GB/s, so a large
transfer spends ~20 ms per 200 MB per end on integrity. Small frames enter the HMAC as
bytes: one GMAC call costs more than hashing a few kilobytes.

A piece's GMAC tag is not sent: the receiver computes the same tags from the bytes it got
and the shared key, and the HMAC over them fails unless every piece arrived unaltered (a
change needs a GMAC forgery, a 2^-100 event for a piece of 1 MiB, or an HMAC collision).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

# Imported with the module, not with the first tagged connection (~7 ms): a data server out
# of file descriptors could not import it then, and would refuse every peer.
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: Bytes of each tag on the wire (HMAC-SHA256).
TAG = 32
#: Frames at least this large are authenticated piece by piece with GMAC (one GMAC call
#: costs ~2.5 µs: as much as HMAC-SHA256 over ~3 KB).
BULK_FRAME = 16 * 1024
#: Bytes per GMAC piece: small enough to be hot in the cache when hashed right after
#: being sent or received, large enough that the per-call cost (~2 µs) is noise.
CHUNK = 1 << 20
#: Pieces per message (the piece number is 4 bytes of the nonce): 4 PiB at 1 MiB each.
MAX_PIECES = 1 << 32


def _derive(key: bytes, label: bytes) -> bytes:
    return hmac.digest(key, label, "sha256")


class MessageAuth:
    """The tags of one direction's messages, keyed per connection, counted."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(_derive(key, b"rdist-tag-hmac"), digestmod="sha256")
        self._gmac = AESGCM(_derive(key, b"rdist-tag-gmac"))
        self._counter = 0

    def next(self) -> MessageTag:
        """The tag of the next message, already fed its number."""
        mac = self._keyed.copy()
        number = self._counter.to_bytes(8, "little")
        mac.update(number)
        self._counter += 1
        return MessageTag(mac, self._gmac, number)


class MessageTag:
    """One message's tags as its parts go by, in order: the prefix (length + header), then
    the frames' parts (:meth:`feed`): a small frame whole, a large one piece by piece."""

    def __init__(self, mac: Any, gmac: AESGCM, number: bytes) -> None:
        self._mac = mac
        self._gmac = gmac
        self._number = number
        self._pieces = 0

    def prefix(self, data: bytes | bytearray | memoryview) -> bytes:
        """Feed the length and header; returns the head tag."""
        self._mac.update(data)
        return bytes(self._mac.copy().digest())

    def feed(self, parts: list[tuple[memoryview, bool]]) -> None:
        """The next parts of the frames, as :func:`pieces` cut them."""
        for part, is_piece in parts:
            if is_piece:
                self.piece(part)
            else:
                self._mac.update(part)

    def piece(self, part: memoryview) -> None:
        """One piece (at most :data:`CHUNK` bytes) of a large frame."""
        if self._pieces >= MAX_PIECES:
            raise ConnectionError("message too large to authenticate")
        nonce = self._pieces.to_bytes(4, "little") + self._number
        self._pieces += 1
        self._mac.update(self._gmac.encrypt(nonce, b"", part))

    def digest(self) -> bytes:
        """The frames tag (after every frame)."""
        return bytes(self._mac.digest())


def pieces(view: memoryview) -> Iterator[tuple[memoryview, bool]]:
    """How a frame is authenticated: ``(part, is_piece)``; a small frame is one part."""
    if view.nbytes < BULK_FRAME:
        yield view, False
        return
    for start in range(0, view.nbytes, CHUNK):
        yield view[start : start + CHUNK], True
