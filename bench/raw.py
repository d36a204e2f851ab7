"""Raw Python socket throughput on this machine: the ceiling for worker-to-worker transfers.

``measure(mb)`` starts a sender process (``python -m bench.raw --send ...``) that writes a
numpy array of ``mb`` MB over a loopback socket with one ``sendall`` per round; this
process receives it with ``recv_into`` straight into one preallocated, already touched
numpy buffer (no allocation, no page faults: the best case for the receiver). The first
round warms up; the best of the rest is reported, as for the transfer workloads.
Each end's CPU time per round (user + system) is reported too: the sender writes its own
to its stdout at the end.

``kind`` is ``tcp`` (127.0.0.1) or ``unix`` (a unix stream socket).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cpu() -> float:
    return time.process_time()


def _send(kind: str, where: str, nbytes: int, rounds: int) -> None:
    import numpy as np

    data = np.ones(nbytes // 8)
    data.fill(1.0)
    view = memoryview(data).cast("B")
    if kind == "tcp":
        sock = socket.create_connection(("127.0.0.1", int(where)))
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(where)
    spent = []
    for _ in range(rounds):
        if sock.recv(1) != b"g":
            break
        start = _cpu()
        sock.sendall(view)
        spent.append(_cpu() - start)
    sock.close()
    print(" ".join(repr(s) for s in spent), flush=True)


def measure(mb: float = 200.0, rounds: int = 6, kind: str = "tcp") -> dict:
    import numpy as np

    nbytes = int(mb * 1_000_000) // 8 * 8
    tmp = None
    if kind == "tcp":
        listener = socket.create_server(("127.0.0.1", 0))
        where = str(listener.getsockname()[1])
    else:
        tmp = tempfile.mkdtemp(prefix="bench-raw-")
        where = os.path.join(tmp, "sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(where)
        listener.listen(1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    sender = subprocess.Popen(
        [sys.executable, "-m", "bench.raw", "--send", kind, where, str(nbytes), str(rounds)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        conn, _ = listener.accept()
        buf = np.empty(nbytes, dtype="u1")
        buf.fill(0)
        view = memoryview(buf)
        speeds, cpu = [], []
        for _ in range(rounds):
            c0 = _cpu()
            t0 = time.perf_counter()
            conn.sendall(b"g")
            got = 0
            while got < nbytes:
                k = conn.recv_into(view[got:], nbytes - got)
                if not k:
                    raise ConnectionError("sender went away")
                got += k
            speeds.append(nbytes / 1e6 / (time.perf_counter() - t0))
            cpu.append(_cpu() - c0)
        conn.close()
    finally:
        listener.close()
        out, _ = sender.communicate(timeout=30)
        if tmp is not None:
            os.unlink(where)
            os.rmdir(tmp)
    runs = speeds[1:] or speeds
    sent = [float(x) for x in out.split()]
    return {
        "kind": kind,
        "mb": nbytes / 1e6,
        "mb_per_s": max(runs),
        "median_mb_per_s": statistics.median(runs),
        "runs": speeds,
        "median_sender_cpu_s": statistics.median(sent[1:] or sent) if sent else None,
        "median_receiver_cpu_s": statistics.median(cpu[1:] or cpu),
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["--send"]:
        _send(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        for kind in ("tcp", "unix"):
            r = measure(kind=kind)
            print(
                "%s: best %.0f MB/s, median %.0f MB/s, CPU per round: sender %.0f ms, "
                "receiver %.0f ms"
                % (
                    kind,
                    r["mb_per_s"],
                    r["median_mb_per_s"],
                    r["median_sender_cpu_s"] * 1e3,
                    r["median_receiver_cpu_s"] * 1e3,
                )
            )
