"""A cluster of real processes that fault tests can kill: Redis, schedulers, workers.

Every role is started as a user would (``python -m rdist ...``) in its own session, so a
SIGKILL reaches exactly one process; everything is killed on close.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from rdist.embedded import EmbeddedRedis
from rdist.protocol import wire
from rdist.store import connect

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcCluster:
    def __init__(
        self,
        n_workers: int = 2,
        worker_ttl: float = 2.0,
        persistence: bool = False,
        redis: EmbeddedRedis | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.own_redis = redis is None
        self.redis = redis or EmbeddedRedis(port=_free_port(), persistence=persistence).start()
        self.url = self.redis.url
        self.cluster = f"proc-{uuid.uuid4().hex[:10]}"
        self.env = {
            **os.environ,
            "RDIST_WORKER_TTL": str(worker_ttl),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        self.log_dir = log_dir
        self.schedulers: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._count = 0
        self.start_scheduler()
        for _ in range(n_workers):
            self.start_worker()

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        cmd = [
            sys.executable,
            "-m",
            "rdist",
            *args,
            "--redis-url",
            self.url,
            "--cluster",
            self.cluster,
        ]
        if self.log_dir is None:
            return subprocess.Popen(
                cmd,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with open(self.log_dir / f"{name}.log", "ab") as out:  # the child keeps its own copy
            return subprocess.Popen(
                cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def start_scheduler(self) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            "scheduler", "--log-level", "warning", name=f"scheduler-{len(self.schedulers)}"
        )
        self.schedulers.append(proc)
        return proc

    def start_worker(self, name: str | None = None) -> str:
        self._count += 1
        name = name or f"w{self._count}"
        extra = ["--no-nanny"] if _supports_no_nanny() else []
        self.workers[name] = self._spawn(
            "worker", "--nthreads", "1", "--name", name, *extra, "--log-level", "warning", name=name
        )
        return name

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.workers.pop(name)
        _kill_group(proc, sig)

    def kill_scheduler(self, sig: int = signal.SIGKILL) -> None:
        for proc in self.schedulers:
            if proc.poll() is None:
                _kill_group(proc, sig)
        self.schedulers = [p for p in self.schedulers if p.poll() is None]

    def live_workers(self) -> dict[str, str]:
        """name -> address of workers in the ``workers`` hash."""
        store = connect(self.url, self.cluster)
        try:
            return {
                wire.unpack(v, "workers").get("name", ""): k.decode()
                for k, v in store.redis.hgetall(store.keys.workers).items()
            }
        finally:
            store.close()

    def wait_for_workers(self, names: list[str] | None = None, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        wanted = set(names or self.workers)
        while not wanted <= set(self.live_workers()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {wanted - set(self.live_workers())} did not start")
            time.sleep(0.05)

    def close(self) -> None:
        for proc in [*self.workers.values(), *self.schedulers]:
            _kill_group(proc, signal.SIGKILL)
        self.workers.clear()
        self.schedulers.clear()
        if self.own_redis:
            self.redis.stop()


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


_NO_NANNY: bool | None = None


def _supports_no_nanny() -> bool:
    global _NO_NANNY
    if _NO_NANNY is None:
        out = subprocess.run(
            [sys.executable, "-m", "rdist", "worker", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        _NO_NANNY = "--no-nanny" in out
    return _NO_NANNY


def worker_view(keys: list[str]) -> dict[str, object]:
    """Run on a worker (``client.run``): what its own state says about ``keys`` (diagnosis
    of hangs: a task the scheduler thinks is here may be unknown to the worker)."""
    from rdist.worker.server import get_worker

    w = get_worker()
    with w.lock:
        out: dict[str, object] = {
            "n_tasks": len(w.state.tasks),
            "n_have": len(w.state.have),
            "fetching": sorted(w.state.fetching)[:5],
        }
        for key in keys:
            ts = w.state.tasks.get(key)
            if ts is not None:
                out[key] = (ts.state.value, sorted(ts.waiting_for_data)[:3])
            elif key in w.state.have:
                out[key] = "have"
            else:
                out[key] = "unknown"
        return out


def stream_view(store: Any, stream: str, group: str) -> dict[str, object]:
    """Length, consumer-group position and pending (delivered, unacknowledged) entries of a
    stream, with the ops and task keys those pending entries carry."""
    redis = store.redis
    view: dict[str, object] = {"len": redis.xlen(stream)}
    try:
        groups = redis.xinfo_groups(stream)
    except Exception as exc:  # no such stream
        return {"error": repr(exc)}
    view["groups"] = [
        {k: g.get(k) for k in ("name", "pending", "last-delivered-id")} for g in groups
    ]
    stuck = []
    for p in redis.xpending_range(stream, group, "-", "+", 20):
        entry = redis.xrange(stream, p["message_id"], p["message_id"])
        body: Any = None
        if entry:
            try:
                msg = wire.unpack(entry[0][1][b"m"], stream)
                body = {
                    "op": msg.get("op"),
                    "actions": [[a[0], a[1]] for a in msg.get("a", ())][:10],
                    "done": [d[0] for d in msg.get("done", ())][:10],
                }
            except Exception as exc:
                body = repr(exc)
        stuck.append(
            {
                "id": p["message_id"],
                "consumer": p["consumer"],
                "idle_ms": p["time_since_delivered"],
                "delivered": p["times_delivered"],
                "entry": body,
            }
        )
    view["pending"] = stuck
    return view
