"""One large data-plane message over localhost TCP: raw socket, untagged, tagged.

Two processes (fork), a TCP connection on 127.0.0.1. The parent sends one frame of SIZE
bytes, the child receives it into preallocated memory and answers with one byte (raw) or
an empty message; the round trip is timed. Modes:

- ``raw``: plain ``sendall`` / ``recv_into`` of the bytes (the ceiling);
- ``plain``: both ends a ``TCPComm`` without keys (as on TLS and same-user unix sockets);
- ``mac`` (``--mac``): both ends a ``TCPComm`` with per-connection keys, so every message
  is tagged (:mod:`rdist.comm.integrity`), as on plain TCP between hosts.

Prints the median of REPS (after one warm-up) as MB/s, and each end's CPU time (user +
system, from ``os.times``) per message: on a loaded machine the CPU time is the steadier
figure. ``--split`` adds where each end's thread spent it (``thread_time`` around
``TCPComm``'s socket writes, its reads and the integrity tags' hashing): the rest is
Python around them.

    python -m bench.dataplane_mac --size 200 --reps 5 [--mac | --raw] [--split]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time
from typing import Any

from rdist.comm.handshake import SessionKeys
from rdist.comm.integrity import MessageTag
from rdist.comm.tcp import TCPComm

#: Seconds of this process's thread in each part of ``TCPComm`` (``--split``).
SPLIT: dict[str, float] = {}


def _cpu() -> float:
    return time.process_time()


def _time_parts() -> None:
    """Wrap the parts of ``TCPComm`` whose CPU time ``--split`` reports."""
    for owner, name, part in (
        (TCPComm, "_write", "write"),
        (TCPComm, "_read_into", "read"),
        (MessageTag, "feed", "hash"),
    ):
        SPLIT[part] = 0.0
        setattr(owner, name, _timed(getattr(owner, name), part))


def _timed(fn: Any, part: str) -> Any:
    def timed(*args: Any) -> Any:
        start = time.thread_time()
        try:
            return fn(*args)
        finally:
            SPLIT[part] += time.thread_time() - start

    return timed


def _split(reps: int) -> str:
    return ", ".join(f"{k} {v / reps * 1000:.0f}" for k, v in SPLIT.items()) if SPLIT else ""


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < view.nbytes:
        k = sock.recv_into(view[got:], view.nbytes - got)
        if not k:
            raise ConnectionError("sender went away")
        got += k


def _receiver(
    conn: socket.socket, mode: str, keys: SessionKeys | None, size: int, reps: int, report: int
) -> None:
    comm = None if mode == "raw" else TCPComm(conn, "sender", keys)
    buf = bytearray(size)
    view = memoryview(buf)
    cpu = 0.0
    for i in range(reps + 1):
        start = _cpu()
        if comm is None:
            _recv_exact(conn, view)
            conn.sendall(b"k")
        else:
            comm.recv()
            comm.send({"op": "ok"})
        if i:  # not the warm-up
            cpu += _cpu() - start
        else:
            SPLIT.update(dict.fromkeys(SPLIT, 0.0))
    os.write(report, json.dumps({"cpu": cpu / reps, "split": _split(reps)}).encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=float, default=100.0, help="message size in MB")
    ap.add_argument("--reps", type=int, default=5)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--mac", action="store_true", help="tagged messages (plain TCP)")
    kind.add_argument("--raw", action="store_true", help="a bare socket, no framing")
    ap.add_argument(
        "--split", action="store_true", help="each end's CPU in writes, reads and hashing"
    )
    args = ap.parse_args()
    mode = "mac" if args.mac else "raw" if args.raw else "plain"
    if args.split and mode != "raw":
        _time_parts()
    size = int(args.size * 1_000_000)
    a, b = os.urandom(32), os.urandom(32)
    mac = mode == "mac"
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _receiver(
            conn, mode, SessionKeys(send=b, recv=a) if mac else None, size, args.reps, report_w
        )
        os._exit(0)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    comm = None if mode == "raw" else TCPComm(sock, "receiver", SessionKeys(a, b) if mac else None)
    payload = bytearray(os.urandom(1 << 20)) * (size // (1 << 20) + 1)
    frame = memoryview(payload)[:size]
    times = []
    cpu = 0.0
    for i in range(args.reps + 1):
        t, c = time.perf_counter(), _cpu()
        if comm is None:
            sock.sendall(frame)
            sock.recv(1)
        else:
            comm.send({"op": "data"}, [frame])
            comm.recv()
        times.append(time.perf_counter() - t)
        if i:
            cpu += _cpu() - c
        else:
            SPLIT.update(dict.fromkeys(SPLIT, 0.0))
    os.waitpid(pid, 0)
    receiver = json.loads(os.read(report_r, 4096))
    median = statistics.median(times[1:])
    print(
        f"{mode} {args.size:g}MB median {median * 1000:.1f} ms {size / median / 1e6:.0f} MB/s"
        f"  cpu/message: sender {cpu / args.reps * 1000:.0f} ms,"
        f" receiver {receiver['cpu'] * 1000:.0f} ms"
    )
    if SPLIT:
        split = f"sender {_split(args.reps)}; receiver {receiver['split']}"
        print(f"  thread CPU per message, ms: {split}")


if __name__ == "__main__":
    main()
