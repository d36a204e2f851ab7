"""The ``rdist`` command: parses flags into settings and starts the right role."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from rdist.config import redis_url_from_env


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _require_url(url: str | None) -> str:
    url = url or redis_url_from_env()
    if not url:
        raise click.UsageError("no Redis URL: pass --redis-url or set RDIST_REDIS_URL / REDIS_URL")
    return url


redis_option = click.option("--redis-url", default=None,
                            help="Redis URL (default: $RDIST_REDIS_URL, then $REDIS_URL)")
cluster_option = click.option("--cluster", default=lambda: os.environ.get("RDIST_CLUSTER", "default"),
                              show_default="default", help="cluster name (several can share one Redis)")
log_option = click.option("--log-level", default="info", show_default=True)


@click.group()
@click.version_option(package_name="rdist")
def main() -> None:
    """rdist: Dask-style distributed futures over Redis."""


@main.command()
@redis_option
@cluster_option
@log_option
def scheduler(redis_url: str | None, cluster: str, log_level: str) -> None:
    """Run the scheduler."""
    from rdist.scheduler.server import SchedulerServer

    _setup_logging(log_level)
    server = SchedulerServer.from_url(_require_url(redis_url), cluster)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.run()


@main.command()
@redis_option
@cluster_option
@click.option("--nthreads", default=1, show_default=True, type=int, help="threads running tasks")
@click.option("--name", default=None, help="worker name (default: its address)")
@click.option("--host", default="127.0.0.1", show_default=True, help="interface the data server binds")
@click.option("--port", default=0, type=int, help="data server port (default: any free port)")
@click.option("--contact-host", default=None, help="host name other processes use to reach us")
@click.option("--memory-limit", default="0", show_default=True, help='bytes, "4GB", or "auto"')
@click.option("--resources", default="", help='e.g. "GPU=2,MEM=1e9"')
@log_option
def worker(redis_url: str | None, cluster: str, nthreads: int, name: str | None, host: str,
           port: int, contact_host: str | None, memory_limit: str, resources: str,
           log_level: str) -> None:
    """Run a worker."""
    from rdist.cluster import parse_memory
    from rdist.worker.server import run_worker

    _setup_logging(log_level)
    run_worker(_require_url(redis_url), cluster, nthreads=nthreads, name=name, host=host,
               port=port, contact_host=contact_host, memory_limit=parse_memory(memory_limit, 1),
               resources=parse_resources(resources))


def parse_resources(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.replace(" ", ",").split(","))):
        name, _, amount = part.partition("=")
        try:
            out[name] = float(amount)
        except ValueError:
            raise click.BadParameter(f"resource {part!r} must look like NAME=AMOUNT") from None
    return out


@main.command()
@redis_option
@cluster_option
@click.option("--workers", "n_workers", default=2, show_default=True, type=int)
@click.option("--nthreads", default=1, show_default=True, type=int)
@log_option
def local(redis_url: str | None, cluster: str, n_workers: int, nthreads: int, log_level: str) -> None:
    """Run a whole cluster here (embedded Redis unless a URL is given) until Ctrl-C."""
    from rdist.cluster import LocalCluster

    _setup_logging(log_level)
    url = redis_url or redis_url_from_env()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with LocalCluster(n_workers=n_workers, threads_per_worker=nthreads, redis_url=url,
                      name=cluster if url else None) as lc:
        click.echo(f"rdist cluster {lc.cluster_name!r} running: RDIST_REDIS_URL={lc.redis_url}"
                   f" RDIST_CLUSTER={lc.cluster_name}")
        sys.stdout.flush()
        done.wait()


@main.command()
@click.option("--workers", "n_workers", default=2, show_default=True, type=int)
def demo(n_workers: int) -> None:
    """Run a small real computation on an embedded local cluster."""
    from rdist.demo import run_demo

    run_demo(n_workers)


@main.command()
@redis_option
@click.option("--cluster", default=None, help="cluster name (default: $RDIST_CLUSTER, else 'default')")
@click.option("--host", default=None, help="interface to bind (default 127.0.0.1; others need a token)")
@click.option("--port", default=None, type=int, help="port (default: $PORT, else 8787)")
@click.option("--interval", default=None, type=float, help="seconds between live snapshots")
@log_option
def dashboard(redis_url: str | None, cluster: str | None, host: str | None, port: int | None,
              interval: float | None, log_level: str) -> None:
    """Serve the live web dashboard (reads Redis only). The token comes from
    RDIST_DASHBOARD_TOKEN, never from a flag, so it stays out of process listings."""
    from rdist.config import ConfigError, load_config
    from rdist.web import run_dashboard

    _setup_logging(log_level)
    try:
        config = load_config({"redis.url": redis_url, "redis.cluster": cluster,
                              "dashboard.host": host, "dashboard.port": port,
                              "dashboard.interval": interval})
        if not config.get("redis.url"):
            raise ConfigError("no Redis URL: pass --redis-url or set RDIST_REDIS_URL / REDIS_URL")
        run_dashboard(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("config")
def config_command() -> None:
    """Print the effective configuration and where each value comes from."""
    from rdist.config import ConfigError, config_path, load_config

    try:
        config = load_config()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"# rdist configuration (file: {config_path()})")
    click.echo(config.render(), nl=False)


def entry(argv: list[str] | None = None) -> Any:
    return main.main(args=argv, prog_name="rdist")


if __name__ == "__main__":
    main()
