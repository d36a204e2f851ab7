"""Serving the dashboard: a threaded WSGI server that stops cleanly on SIGTERM.

Werkzeug's threaded server carries Flask-SocketIO's WebSocket transport (via
simple-websocket) with no extra dependency; a dashboard has a handful of viewers, so a
thread each is fine. SIGTERM (Heroku gives 30 s, docker 10 s) stops the live feed and the
server within a second.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from werkzeug.serving import make_server

from rdist.config import Config, mask_url
from rdist.logbuffer import rdist_version
from rdist.procs import die_with_parent
from rdist.web.app import check_exposure, create_app

log = logging.getLogger("rdist.web")


class DashboardServer:
    """The app bound to a socket; ``port=0`` picks a free port (see ``.port``)."""

    def __init__(self, config: Config) -> None:
        host = str(config.get("dashboard.host"))
        check_exposure(host, config.get("dashboard.token"))
        self.app = create_app(config)
        self.server = make_server(
            host, int(config.get("dashboard.port") or 0), self.app, threaded=True
        )
        self.server.daemon_threads = True  # type: ignore[attr-defined]  # sockets must not delay SIGTERM
        self.host = host
        self.port = int(self.server.server_port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve_forever(self) -> None:
        # the feed samples the history from the start, so charts opened later have it
        self.app.extensions["rdist"].feed.start()
        try:
            self.server.serve_forever(poll_interval=0.5)
        finally:
            self.app.extensions["rdist"].close()

    def shutdown(self) -> None:
        """Safe from a signal handler: the server's own loop is told to return."""
        self.app.extensions["rdist"].feed.stop()
        threading.Thread(target=self.server.shutdown, daemon=True).start()


def run_dashboard(config: Config) -> None:
    """Serve until SIGTERM or SIGINT (the ``rdist dashboard`` command)."""
    server = DashboardServer(config)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise

    def stop(*_: Any) -> None:
        log.info("dashboard stopping")
        server.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "rdist %s dashboard (pid %d) for cluster %r on %s at %s",
        rdist_version(),
        os.getpid(),
        config.get("redis.cluster"),
        mask_url(config.get("redis.url")),
        server.url,
    )
    print(
        f"rdist dashboard for cluster {config.get('redis.cluster')!r} at {server.url}", flush=True
    )
    server.serve_forever()


def parse_address(address: str | int) -> tuple[str, int]:
    """``":8787"`` -> ("127.0.0.1", 8787); ``"0.0.0.0:80"``; ``8787``; ``":0"`` picks a port."""
    text = str(address).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    try:
        return host.strip("[]") or "127.0.0.1", int(port or 0)
    except ValueError:
        raise ValueError(
            f"dashboard address {address!r} must look like ':8787' or 'host:port'"
        ) from None


class DashboardProcess:
    """``rdist dashboard`` as a child process (LocalCluster's ``dashboard_address``).

    A process of its own keeps the web server's threads and its Redis reads away from the
    caller's, and it is what an operator would run anyway. It prints its URL once bound,
    which is how we learn a port picked with ``:0`` and know it is up.
    """

    def __init__(
        self,
        redis_url: str,
        cluster: str,
        address: str | int,
        timeout: float = 30,
        wait: bool = True,
    ) -> None:
        host, port = parse_address(address)
        self._timeout = timeout
        self.link: str | None = None
        self.process = subprocess.Popen(
            [  # the Redis URL (with its password) by the environment: argv is world-readable
                sys.executable,
                "-m",
                "rdist",
                "dashboard",
                "--cluster",
                cluster,
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "RDIST_REDIS_URL": redis_url},
            preexec_fn=die_with_parent,
        )
        if wait:
            self.ready()

    def ready(self) -> DashboardProcess:
        """Wait until it serves (``wait=False`` let the caller do other work meanwhile)."""
        if self.link is None:
            self.link = self._wait_for_url(self._timeout)
        return self

    def _wait_for_url(self, timeout: float) -> str:
        found: list[str] = []
        reader = threading.Thread(
            target=lambda: found.append(self.process.stdout.readline()),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        self._drain = reader
        reader.join(timeout)
        line = found[0] if found else ""
        if " at http" not in line:
            self.stop()
            raise RuntimeError(
                f"the dashboard did not start within {timeout} s "
                f"(exit code {self.process.poll()}); see its error output above"
            )
        self._drain = threading.Thread(target=self.process.stdout.read, daemon=True)  # type: ignore[union-attr]
        self._drain.start()
        return line.rsplit(" at ", 1)[1].strip()

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._drain.join(2)  # EOF arrives once the process has gone
        if self.process.stdout is not None and not self._drain.is_alive():
            self.process.stdout.close()


class DashboardThread:
    """The dashboard served from a thread of this process: for ``fakeredis://`` clusters,
    whose in-memory server another process cannot see (tests, in-process LocalClusters)."""

    def __init__(self, redis_url: str, cluster: str, address: str | int) -> None:
        from rdist.config import load_config

        host, port = parse_address(address)
        overrides = {
            "redis.url": redis_url,
            "redis.cluster": cluster,
            "dashboard.host": host,
            "dashboard.port": port,
        }
        self.server = DashboardServer(load_config(overrides))
        self.link = self.server.url
        self._thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="rdist-dashboard"
        )
        self._thread.start()

    def ready(self) -> DashboardThread:
        return self

    def stop(self, timeout: float = 10) -> None:
        self.server.shutdown()
        self._thread.join(timeout)


def start_dashboard(
    redis_url: str, cluster: str, address: str | int, wait: bool = True
) -> DashboardProcess | DashboardThread:
    """A dashboard for LocalCluster: its own process, or a thread for in-memory fakeredis
    (``wait=False``: the process is starting; ``ready()`` waits for it)."""
    if redis_url.startswith("fakeredis://"):
        return DashboardThread(redis_url, cluster, address)
    return DashboardProcess(redis_url, cluster, address, wait=wait)
