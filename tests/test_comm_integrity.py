"""The tags of data-plane messages on plain TCP (rdist.comm.integrity): large frames enter
through per-piece GMAC tags, and every change a relay could make still fails the message."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import numpy as np
import pytest

from rdist.comm.core import AuthenticationError
from rdist.comm.handshake import SessionKeys
from rdist.comm.integrity import BULK_FRAME, CHUNK, TAG, MessageAuth, pieces
from rdist.comm.tcp import TCPComm

KEY_A, KEY_B = b"a" * 32, b"b" * 32


def tag_of(key: bytes, prefix: bytes, frames: list[bytes], skip: int = 0) -> bytes:
    """The frames tag a receiver computes for one message (the ``skip``-th of the direction)."""
    auth = MessageAuth(key)
    for _ in range(skip):
        auth.next()
    tag = auth.next()
    tag.prefix(prefix)
    for frame in frames:
        tag.feed(list(pieces(memoryview(frame))))
    return tag.digest()


def test_small_frames_are_one_part_and_large_ones_are_cut_in_chunks() -> None:
    assert [(p.nbytes, bulk) for p, bulk in pieces(memoryview(bytes(BULK_FRAME - 1)))] == [
        (BULK_FRAME - 1, False)
    ]
    assert [(p.nbytes, bulk) for p, bulk in pieces(memoryview(bytes(BULK_FRAME)))] == [
        (BULK_FRAME, True)
    ]
    sizes = [p.nbytes for p, _ in pieces(memoryview(bytes(2 * CHUNK + 5)))]
    assert sizes == [CHUNK, CHUNK, 5]


def test_both_ends_compute_the_same_tags_and_any_change_alters_them() -> None:
    big = os.urandom(2 * CHUNK + 100)
    frames = [b"pickle", big]
    honest = tag_of(KEY_A, b"head", frames)
    assert len(honest) == TAG and honest == tag_of(KEY_A, b"head", frames)
    flipped = bytearray(big)
    flipped[CHUNK + 7] ^= 1
    assert tag_of(KEY_A, b"head", [b"pickle", bytes(flipped)]) != honest
    # the same bytes with two pieces swapped: each piece is bound to its place
    swapped = big[CHUNK : 2 * CHUNK] + big[:CHUNK] + big[2 * CHUNK :]
    assert tag_of(KEY_A, b"head", [b"pickle", swapped]) != honest
    assert tag_of(KEY_A, b"HEAD", frames) != honest  # the header
    assert tag_of(KEY_B, b"head", frames) != honest  # another connection's key
    assert tag_of(KEY_A, b"head", frames, skip=1) != honest  # another message number


def test_two_messages_of_identical_content_get_different_tags() -> None:
    """No nonce repeats under one key: the second message's pieces have other nonces."""
    frames = [os.urandom(CHUNK)]
    auth = MessageAuth(KEY_A)
    tags = []
    for _ in range(2):
        tag = auth.next()
        tag.prefix(b"head")
        tag.piece(memoryview(frames[0]))
        tags.append(tag.digest())
    assert tags[0] != tags[1]


def pair() -> tuple[TCPComm, socket.socket]:
    """A tagged sender, and the raw socket its bytes arrive on."""
    a, b = socket.socketpair()
    return TCPComm(a, "sender", SessionKeys(send=KEY_A, recv=KEY_B)), b


def wire_bytes(header: dict[str, Any], frames: list[Any]) -> bytes:
    sender, raw = pair()
    out = bytearray()

    def drain() -> None:
        while chunk := raw.recv(1 << 20):
            out.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    sender.send(header, frames)
    sender.close()
    reader.join(10)
    raw.close()
    return bytes(out)


def receive(data: bytes) -> tuple[dict[str, Any], list[Any]]:
    a, b = socket.socketpair()
    receiver = TCPComm(b, "receiver", SessionKeys(send=KEY_B, recv=KEY_A))
    threading.Thread(target=lambda: (a.sendall(data), a.close())).start()
    try:
        return receiver.recv()
    finally:
        receiver.close()


def test_a_small_message_with_a_bulk_frame_arrives_intact() -> None:
    frames = [b"x" * 10, os.urandom(BULK_FRAME + 1)]  # joined into one write, one piece
    header, got = receive(wire_bytes({"op": "y"}, frames))
    assert header["op"] == "y" and [bytes(g) for g in got] == frames


def test_a_tagged_large_message_arrives_intact_over_a_socket() -> None:
    array = np.random.default_rng(1).random(CHUNK // 2 + 3)  # 4 MiB + 24 bytes: 5 pieces
    frames = [b"small", array, b"", bytes(BULK_FRAME), os.urandom(BULK_FRAME - 1)]
    header, got = receive(wire_bytes({"op": "x"}, frames))
    assert header["op"] == "x"
    assert [bytes(g) for g in got] == [bytes(memoryview(f).cast("B")) for f in frames]


def test_a_byte_flipped_in_the_last_piece_of_a_large_frame_fails_the_frames_tag() -> None:
    frames = [os.urandom(3 * CHUNK + 11)]
    data = bytearray(wire_bytes({"op": "x"}, frames))
    data[-TAG - 5] ^= 1  # inside the frame's last piece, before the frames tag
    with pytest.raises(AuthenticationError, match=r"integrity check \(frames\)"):
        receive(bytes(data))


def test_no_gmac_nonce_repeats_across_pieces_and_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """GMAC under one key must never see a nonce twice (it would leak the hash key)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    seen: list[bytes] = []
    real = AESGCM.encrypt

    def recording(self: AESGCM, nonce: bytes, data: bytes, aad: Any) -> bytes:
        seen.append(bytes(nonce))
        return real(self, nonce, data, aad)

    monkeypatch.setattr(AESGCM, "encrypt", recording)
    auth = MessageAuth(KEY_A)
    frame = memoryview(bytes(3 * CHUNK))
    for _ in range(2):
        tag = auth.next()
        tag.prefix(b"head")
        for part, _ in pieces(frame):
            tag.piece(part)
        tag.digest()
    assert len(seen) == 6 and len(set(seen)) == 6


# -- large frames over real TCP -----------------------------------------------------------


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a loopback TCP connection (a socketpair would be a unix socket)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    b.settimeout(20)  # a read waiting for bytes that never come fails the test, not hangs it
    return a, b


def tagged_tcp() -> tuple[TCPComm, TCPComm]:
    a, b = tcp_pair()
    sender = TCPComm(a, "sender", SessionKeys(send=KEY_A, recv=KEY_B))
    return sender, TCPComm(b, "receiver", SessionKeys(send=KEY_B, recv=KEY_A))


#: A frame's size at and around piece boundaries (a tail piece of one byte, of almost a
#: piece, of none).
BIG = 4 * CHUNK


@pytest.mark.parametrize("size", [BIG, BIG + 1, BIG + CHUNK - 1, BIG + BULK_FRAME + 3])
def test_a_large_frame_arrives_while_the_sender_waits_for_the_answer(size: int) -> None:
    """The peer sends one message and waits for the answer (no end of stream wakes the
    reader): the frame is whole, and the next message on the connection reads too."""
    sender, receiver = tagged_tcp()
    frame = np.random.default_rng(size).integers(0, 255, size, dtype="u1")
    answered = threading.Event()

    def send() -> None:
        sender.send({"op": "big"}, [b"pickle", frame])
        answered.wait(30)  # the connection stays open: no end-of-stream wakes the reader
        sender.send({"op": "small"}, [b"x"])

    thread = threading.Thread(target=send)
    thread.start()
    try:
        header, got = receiver.recv()
        assert header["op"] == "big" and bytes(got[0]) == b"pickle"
        assert np.array_equal(np.frombuffer(got[1], dtype="u1"), frame)
        answered.set()
        assert receiver.recv()[0]["op"] == "small"
    finally:
        answered.set()
        thread.join(30)
        sender.close()
        receiver.close()


def test_a_large_frame_trickling_in_many_small_writes_assembles_exactly() -> None:
    """Bytes sent and read a few kilobytes at a time (every read returns at most what a
    random cap allows), across piece boundaries, in hundreds of reads: the frame is whole,
    and the tags still match."""
    wire = wire_bytes({"op": "x"}, [b"head", os.urandom(BIG + 12_345)])
    a, b = tcp_pair()
    receiver = TCPComm(b, "receiver", SessionKeys(send=KEY_B, recv=KEY_A))
    rng, steps = np.random.default_rng(7), np.random.default_rng(8)
    reads = 0
    real = receiver.sock.recv_into

    def counting(buf: memoryview, nbytes: int = 0) -> int:
        nonlocal reads
        reads += 1
        return real(buf, min(nbytes or buf.nbytes, int(rng.integers(1, 70_000))))

    def trickle() -> None:
        view, at = memoryview(wire), 0
        while at < len(wire):
            step = int(steps.integers(1, 70_000))
            a.sendall(view[at : at + step])
            at += step

    receiver.sock = Spy(b, counting)  # type: ignore[assignment]
    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        header, got = receiver.recv()
    finally:
        thread.join(30)
        a.close()
        receiver.close()
    assert header["op"] == "x" and bytes(got[0]) == b"head"
    assert bytes(got[1]) == wire[-TAG - BIG - 12_345 : -TAG]
    assert reads > 100


class Spy:
    """A socket whose ``recv_into`` is replaced (socket objects' own methods are read-only)."""

    def __init__(self, sock: socket.socket, recv_into: Any) -> None:
        self._sock = sock
        self.recv_into = recv_into

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_byte_flipped_in_a_middle_piece_of_a_large_frame_is_refused_over_tcp() -> None:
    frames = [os.urandom(BIG + 3 * CHUNK + 17)]
    data = bytearray(wire_bytes({"op": "x"}, frames))
    data[len(data) // 2] ^= 1
    a, b = tcp_pair()
    receiver = TCPComm(b, "receiver", SessionKeys(send=KEY_B, recv=KEY_A))
    thread = threading.Thread(target=lambda: a.sendall(data))
    thread.start()
    try:
        with pytest.raises(AuthenticationError, match=r"integrity check \(frames\)"):
            receiver.recv()
    finally:
        thread.join(30)
        a.close()
        receiver.close()
