"""The ``rdist`` command: parses flags into settings and starts the right role."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from rdist.cli_worker import WorkerSettings, worker_flags
from rdist.config import Config, ConfigError, config_path, load_config, mask_url
from rdist.settings import BY_NAME

#: the levels ``--log-level`` takes (any case)
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _setup_logging(level: str) -> None:
    """Lines at ``level`` and above on stderr; the ``rdist`` loggers still pass INFO to
    the process's log buffer (``client.get_worker_logs``; rdist.logbuffer), as dask's
    ``silence_logs`` quiets the console only."""
    number = logging.getLevelName(level.upper())
    logging.basicConfig(level=number, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setLevel(number)
    logging.getLogger("rdist").setLevel(min(number, logging.INFO))


def _setting(name: str) -> str:
    """The tail of a flag's help: the setting it overrides, its variable, its default."""
    setting = BY_NAME[name]
    env = setting.aliases[-1] if setting.aliases else setting.env
    return f"[{name}: ${env}, default {setting.default}]"


def _load(flags: dict[str, Any]) -> Config:
    """The configuration with these flags on top (None: not given); a bad value is a usage
    error naming the setting and where it came from."""
    try:
        return load_config(flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _require_url(config: Config) -> str:
    url = config.get("redis.url")
    if not url:
        raise click.UsageError(
            "no Redis URL: pass --redis-url, set RDIST_REDIS_URL / REDIS_URL, or redis.url "
            f"in {config_path()}"
        )
    return str(url)


def _fail(message: str, code: int) -> None:
    click.echo(f"rdist: {message}", err=True)
    sys.exit(code)


def _exit_for_config(error: Exception) -> None:
    """A loop met a permanent Redis error (a password rotated under us, say): no retry
    will help, so the process ends with the configuration exit status (the nanny, and
    any supervisor reading sysexits, does not restart it)."""
    from rdist.store.health import EXIT_CONFIG

    logging.getLogger("rdist").critical("%s", error)
    sys.stderr.flush()
    os._exit(EXIT_CONFIG)


def _check_redis(url: str, cluster: str, role: str, timeout: float) -> None:
    """A role checks Redis before it starts: a permanent problem (malformed URL, wrong
    password, TLS) exits with status 78 at once, Redis not answering within ``timeout``
    with status 1 -- each with a message naming the URL (password masked) and the fix."""
    from rdist.store import connect
    from rdist.store.health import EXIT_CONFIG, RedisConfigError, exit_on_permanent_errors

    exit_on_permanent_errors(_exit_for_config)
    try:
        store = connect(url, cluster)
        try:
            store.check(timeout, what=f"{role} starting")
        finally:
            store.close()
    except RedisConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except TimeoutError as exc:
        _fail(str(exc), 1)


redis_option = click.option("--redis-url", default=None, help="Redis URL " + _setting("redis.url"))
cluster_option = click.option(
    "--cluster",
    default=None,
    help="cluster name, several can share one Redis " + _setting("redis.cluster"),
)
log_option = click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="lines shown on stderr (the log buffer keeps INFO and above regardless)",
)
timeout_option = click.option(
    "--timeout",
    "connect_timeout",
    default=None,
    type=float,
    help="seconds to wait at start for Redis to answer " + _setting("comm.connect_timeout"),
)


def tls_options(command: Any) -> Any:
    """``--tls-cert/--tls-key/--tls-ca``: TLS for the data plane (rdist.comm.security)."""
    for flag, what in (
        ("--tls-ca", "CA certificate every member's certificate is signed by [$RDIST_TLS_CA]"),
        ("--tls-key", "private key of --tls-cert, unless in that file [$RDIST_TLS_KEY]"),
        ("--tls-cert", "certificate (PEM) of this process: data over TLS [$RDIST_TLS_CERT]"),
    ):
        command = click.option(flag, default=None, help=what)(command)
    return command


def _security(cert: str | None, key: str | None, ca: str | None) -> Any:
    """The data plane's TLS settings: these flags over the environment and config file."""
    from rdist.comm.security import Security
    from rdist.config import ConfigError, load_config

    try:
        config = load_config({"tls.cert": cert, "tls.key": key, "tls.ca": ca})
        return Security.from_config(config).check()
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
@click.version_option(package_name="rdist")
def main() -> None:
    """rdist: Dask-style distributed futures over Redis."""


@main.command()
@redis_option
@cluster_option
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE:FACTORY",
    help="a scheduler plugin to load (repeatable; also scheduler.plugins in the config file "
    "and the entry-point group rdist.scheduler_plugins)",
)
@click.option(
    "--accept-client-plugins",
    is_flag=True,
    default=False,
    help="unpickle and run the scheduler plugins clients register (off by default: the "
    "scheduler runs no code clients send)",
)
@log_option
@timeout_option
def scheduler(
    redis_url: str | None,
    cluster: str,
    plugins: tuple[str, ...],
    accept_client_plugins: bool,
    log_level: str,
    connect_timeout: float | None,
) -> None:
    """Run the scheduler."""
    from rdist.plugins.scheduler_side import PluginConfigError, load_plugins
    from rdist.procs import tune_gc
    from rdist.scheduler.server import SchedulerServer

    _setup_logging(log_level)
    config = _load(
        {
            "redis.url": redis_url,
            "redis.cluster": cluster,
            "comm.connect_timeout": connect_timeout,
            "scheduler.accept_client_plugins": True if accept_client_plugins else None,
        }
    )
    url = _require_url(config)
    try:
        loaded = load_plugins([*config.get("scheduler.plugins"), *plugins])
    except PluginConfigError as exc:
        raise click.UsageError(str(exc)) from None
    name = str(config.get("redis.cluster"))
    _check_redis(url, name, "scheduler", float(config.get("comm.connect_timeout")))
    try:
        server = SchedulerServer.from_url(
            url,
            name,
            plugins=loaded,
            accept_client_plugins=bool(config.get("scheduler.accept_client_plugins")),
            config=config,
        )
    except ConfigError as exc:  # a setting only the scheduler checks (its lease's length)
        raise click.UsageError(str(exc)) from None
    tune_gc()
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.run()


@main.command()
@click.argument("address", required=False, metavar="[REDIS_URL]")
@redis_option
@cluster_option
@click.option(
    "--nthreads",
    default=None,
    type=int,
    help="threads running tasks " + _setting("worker.nthreads"),
)
@click.option("--name", default=None, help="worker name (default: its address)")
@click.option(
    "--host", default=None, help="interface the data server binds " + _setting("worker.host")
)
@click.option("--port", default=None, type=int, help="data server port " + _setting("worker.port"))
@click.option(
    "--listen-address",
    default=None,
    help="where the data server listens, e.g. tcp://0.0.0.0:8788 (overrides --host/--port)",
)
@click.option(
    "--contact-address",
    default=None,
    help="address peers use to reach us, e.g. tcp://203.0.113.5:8788 (NAT, containers)",
)
@click.option(
    "--contact-host",
    default=None,
    help="host name or IP peers use to reach us, with our port (a pod's IP) "
    + _setting("worker.contact_host"),
)
@click.option(
    "--memory-limit",
    default=None,
    help='bytes, "4GB", or "auto" ' + _setting("worker.memory_limit"),
)
@click.option(
    "--memory-target-fraction",
    type=float,
    default=None,
    help="spill data past this fraction of the limit " + _setting("worker.memory_target"),
)
@click.option(
    "--memory-spill-fraction",
    type=float,
    default=None,
    help="spill when process memory passes this " + _setting("worker.memory_spill"),
)
@click.option(
    "--memory-pause-fraction",
    type=float,
    default=None,
    help="take no new tasks past this " + _setting("worker.memory_pause"),
)
@click.option(
    "--memory-terminate-fraction",
    type=float,
    default=None,
    help="the nanny restarts the worker past this " + _setting("worker.memory_terminate"),
)
@click.option(
    "--spill-directory",
    default=None,
    help="where spilled data goes " + _setting("worker.spill_directory"),
)
@click.option(
    "--transfer",
    type=click.Choice(["p2p", "redis", "auto"]),
    default=None,
    help="how data moves between workers: directly, through Redis, or directly "
    "with Redis as the fallback " + _setting("comm.transfer"),
)
@click.option(
    "--nanny/--no-nanny",
    default=None,
    help="run the worker under a nanny that restarts it " + _setting("worker.nanny"),
)
@click.option("--nanny-fd", type=int, default=None, hidden=True)
@click.option(
    "--resources", default=None, help='e.g. "GPU=2,MEM=1e9" ' + _setting("worker.resources")
)
@tls_options
@log_option
@timeout_option
def worker(
    address: str | None,
    redis_url: str | None,
    log_level: str,
    nanny_fd: int | None,
    name: str | None,
    listen_address: str | None,
    contact_address: str | None,
    **flags: Any,
) -> None:
    """Run a worker (under a nanny unless --no-nanny) of the cluster at REDIS_URL
    (or --redis-url, or the configuration's redis.url)."""
    _setup_logging(log_level)
    if address and redis_url and address != redis_url:
        raise click.UsageError("give the Redis URL once: as REDIS_URL or as --redis-url")
    config = _load({"redis.url": address or redis_url, **worker_flags(flags)})
    url = _require_url(config)
    settings = WorkerSettings.of(config)
    _check_redis(url, settings.cluster, "worker", settings.connect_timeout)
    if settings.nanny:
        from rdist.worker.nanny import Nanny

        args = settings.child_args(log_level, name, listen_address, contact_address)
        sys.exit(
            Nanny(
                url,
                settings.cluster,
                args,
                settings.memory_limit,
                settings.fractions.terminate,
                settings.spill_directory,
            ).run()
        )
    from rdist.worker.server import run_worker

    run_worker(
        url,
        settings.cluster,
        nanny_fd=nanny_fd,
        nthreads=settings.nthreads,
        name=name,
        host=settings.host,
        port=settings.port,
        listen_address=listen_address,
        contact_address=contact_address,
        contact_host=settings.contact_host,
        memory_limit=settings.memory_limit,
        memory_fractions=settings.fractions,
        spill_directory=settings.spill_directory,
        transfer=settings.transfer,
        resources=parse_resources(settings.resources),
        security=settings.security,
        heartbeat_interval=settings.heartbeat_interval,
    )


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
def local(
    redis_url: str | None, cluster: str | None, n_workers: int, nthreads: int, log_level: str
) -> None:
    """Run a whole cluster here (embedded Redis unless a URL is given) until Ctrl-C."""
    from rdist.cluster import LocalCluster

    _setup_logging(log_level)
    config = _load({"redis.url": redis_url, "redis.cluster": cluster})
    url, cluster = config.get("redis.url"), config.get("redis.cluster")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with LocalCluster(
        n_workers=n_workers,
        threads_per_worker=nthreads,
        redis_url=url,
        name=cluster if url else None,
        silence_logs=log_level,  # (the roles show what --log-level says)
    ) as lc:
        click.echo(
            f"rdist cluster {lc.cluster_name!r} running: RDIST_REDIS_URL={mask_url(lc.redis_url)}"
            f" RDIST_CLUSTER={lc.cluster_name} dashboard={lc.dashboard_link}"
        )
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
@cluster_option
@click.option(
    "--host", default=None, help="interface to bind (default 127.0.0.1; others need a token)"
)
@click.option("--port", default=None, type=int, help="port " + _setting("dashboard.port"))
@click.option(
    "--interval",
    default=None,
    type=float,
    help="seconds between live snapshots " + _setting("dashboard.interval"),
)
@log_option
@timeout_option
def dashboard(
    redis_url: str | None,
    cluster: str | None,
    host: str | None,
    port: int | None,
    interval: float | None,
    log_level: str,
    connect_timeout: float | None,
) -> None:
    """Serve the live web dashboard (reads Redis only). The token comes from
    RDIST_DASHBOARD_TOKEN, never from a flag, so it stays out of process listings."""
    from rdist.web import run_dashboard

    _setup_logging(log_level)
    config = _load(
        {
            "redis.url": redis_url,
            "redis.cluster": cluster,
            "comm.connect_timeout": connect_timeout,
            "dashboard.host": host,
            "dashboard.port": port,
            "dashboard.interval": interval,
        }
    )
    url = _require_url(config)
    timeout = float(config.get("comm.connect_timeout"))
    _check_redis(url, str(config.get("redis.cluster")), "dashboard", timeout)
    try:
        run_dashboard(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("config")
@click.option(
    "--markdown",
    is_flag=True,
    help="print the table of every setting (docs/configuration.md) instead",
)
def config_command(markdown: bool) -> None:
    """Print the effective configuration and where each value comes from."""
    from rdist.settings import markdown_table

    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    config = _load({})
    click.echo(f"# rdist configuration (file: {config_path()})")
    click.echo(config.render(), nl=False)


def entry(argv: list[str] | None = None) -> Any:
    return main.main(args=argv, prog_name="rdist")


if __name__ == "__main__":
    main()
