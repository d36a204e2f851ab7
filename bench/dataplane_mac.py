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
figure.

    python -m bench.dataplane_mac --size 200 --reps 5 [--mac | --raw]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

from rdist.comm.handshake import SessionKeys
from rdist.comm.tcp import TCPComm


def _cpu() -> float:
    return time.process_time()


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
    os.write(report, f"{cpu / reps}".encode())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=float, default=100.0, help="message size in MB")
    ap.add_argument("--reps", type=int, default=5)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--mac", action="store_true", help="tagged messages (plain TCP)")
    kind.add_argument("--raw", action="store_true", help="a bare socket, no framing")
    args = ap.parse_args()
    mode = "mac" if args.mac else "raw" if args.raw else "plain"
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
    os.waitpid(pid, 0)
    receiver_cpu = float(os.read(report_r, 64))
    median = statistics.median(times[1:])
    print(
        f"{mode} {args.size:g}MB median {median * 1000:.1f} ms {size / median / 1e6:.0f} MB/s"
        f"  cpu/message: sender {cpu / args.reps * 1000:.0f} ms,"
        f" receiver {receiver_cpu * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
