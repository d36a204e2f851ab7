"""Throughput of one data-plane message over localhost TCP: per-message MACs vs none.

Two processes (fork), a TCP connection on 127.0.0.1, each end a ``TCPComm``; with
``--mac`` both ends get per-connection keys (every message HMAC-SHA256 tagged, as on
plain TCP between hosts), without it none (as on TLS and same-user unix sockets). The
sender sends one frame of SIZE bytes, the receiver answers with an empty message; the
round trip is timed. Prints the median of REPS (after one warm-up) as MB/s.

    python -m bench.dataplane_mac --size 100 --reps 5 [--mac]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

from rdist.comm.handshake import SessionKeys
from rdist.comm.tcp import TCPComm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=float, default=100.0, help="message size in MB")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mac", action="store_true")
    args = ap.parse_args()
    size = int(args.size * 1_000_000)
    a, b = os.urandom(32), os.urandom(32)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # receiver
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        comm = TCPComm(conn, "sender", SessionKeys(send=b, recv=a) if args.mac else None)
        for _ in range(args.reps + 1):
            comm.recv()
            comm.send({"op": "ok"})
        os._exit(0)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    comm = TCPComm(sock, "receiver", SessionKeys(send=a, recv=b) if args.mac else None)
    payload = bytearray(os.urandom(1 << 20)) * (size // (1 << 20) + 1)
    frame = memoryview(payload)[:size]
    times = []
    for _ in range(args.reps + 1):
        t = time.perf_counter()
        comm.send({"op": "data"}, [frame])
        comm.recv()
        times.append(time.perf_counter() - t)
    os.waitpid(pid, 0)
    median = statistics.median(times[1:])
    kind = "mac" if args.mac else "plain"
    print(f"{kind} {args.size:g}MB median {median * 1000:.1f} ms {size / median / 1e6:.0f} MB/s")


if __name__ == "__main__":
    main()
