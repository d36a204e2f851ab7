"""The ``rdist`` command: parses flags into settings and starts the right role."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import click

from rdist.config import mask_url, redis_url_from_env

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


def _require_url(url: str | None) -> str:
    url = url or redis_url_from_env()
    if not url:
        raise click.UsageError("no Redis URL: pass --redis-url or set RDIST_REDIS_URL / REDIS_URL")
    return url


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


redis_option = click.option(
    "--redis-url", default=None, help="Redis URL (default: $RDIST_REDIS_URL, then $REDIS_URL)"
)
cluster_option = click.option(
    "--cluster",
    default=lambda: os.environ.get("RDIST_CLUSTER", "default"),
    show_default="default",
    help="cluster name (several can share one Redis)",
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
    default=30.0,
    show_default=True,
    type=float,
    help="seconds to wait at start for Redis to answer (as dask's connect timeout)",
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
    connect_timeout: float,
) -> None:
    """Run the scheduler."""
    from rdist.config import ConfigError, load_config
    from rdist.plugins.scheduler_side import PluginConfigError, load_plugins
    from rdist.procs import tune_gc
    from rdist.scheduler.server import SchedulerServer

    _setup_logging(log_level)
    url = _require_url(redis_url)
    try:
        config = load_config()
        specs = [*config.get("scheduler.plugins", []), *plugins]
        loaded = load_plugins(specs)
    except (ConfigError, PluginConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    accept = accept_client_plugins or bool(config.get("scheduler.accept_client_plugins"))
    _check_redis(url, cluster, "scheduler", connect_timeout)
    server = SchedulerServer.from_url(url, cluster, plugins=loaded, accept_client_plugins=accept)
    tune_gc()
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    server.run()


@main.command()
@redis_option
@cluster_option
@click.option("--nthreads", default=1, show_default=True, type=int, help="threads running tasks")
@click.option("--name", default=None, help="worker name (default: its address)")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="interface the data server binds"
)
@click.option("--port", default=0, type=int, help="data server port (default: any free port)")
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
@click.option("--contact-host", default=None, help="host name peers use to reach us (our port)")
@click.option("--memory-limit", default="0", show_default=True, help='bytes, "4GB", or "auto"')
@click.option(
    "--memory-target-fraction",
    type=float,
    default=None,
    help="spill data past this fraction of the limit [$RDIST_MEMORY_TARGET, 0.6]",
)
@click.option(
    "--memory-spill-fraction",
    type=float,
    default=None,
    help="spill when process memory passes this [$RDIST_MEMORY_SPILL, 0.7]",
)
@click.option(
    "--memory-pause-fraction",
    type=float,
    default=None,
    help="take no new tasks past this [$RDIST_MEMORY_PAUSE, 0.8]",
)
@click.option(
    "--memory-terminate-fraction",
    type=float,
    default=None,
    help="the nanny restarts the worker past this [$RDIST_MEMORY_TERMINATE, 0.95]",
)
@click.option(
    "--spill-directory",
    default=None,
    envvar="RDIST_SPILL_DIRECTORY",
    help="where spilled data goes (default: a temporary directory)",
)
@click.option(
    "--transfer",
    type=click.Choice(["p2p", "redis", "auto"]),
    default="auto",
    envvar="RDIST_TRANSFER",
    show_default=True,
    show_envvar=True,
    help="how data moves between workers: directly, through Redis, or directly "
    "with Redis as the fallback",
)
@click.option(
    "--nanny/--no-nanny",
    default=True,
    show_default=True,
    help="run the worker under a nanny that restarts it",
)
@click.option("--nanny-fd", type=int, default=None, hidden=True)
@click.option("--resources", default="", help='e.g. "GPU=2,MEM=1e9"')
@tls_options
@log_option
@timeout_option
def worker(
    redis_url: str | None,
    cluster: str,
    nthreads: int,
    name: str | None,
    host: str,
    port: int,
    listen_address: str | None,
    contact_address: str | None,
    contact_host: str | None,
    memory_limit: str,
    memory_target_fraction: float | None,
    memory_spill_fraction: float | None,
    memory_pause_fraction: float | None,
    memory_terminate_fraction: float | None,
    spill_directory: str | None,
    transfer: str,
    nanny: bool,
    nanny_fd: int | None,
    resources: str,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    log_level: str,
    connect_timeout: float,
) -> None:
    """Run a worker (under a nanny unless --no-nanny)."""
    from rdist.cluster import parse_memory
    from rdist.worker.memory import MemoryFractions

    _setup_logging(log_level)
    url = _require_url(redis_url)
    security = _security(tls_cert, tls_key, tls_ca)  # a bad flag is said before Redis is asked
    try:
        fractions = MemoryFractions.from_env(
            target=memory_target_fraction,
            spill=memory_spill_fraction,
            pause=memory_pause_fraction,
            terminate=memory_terminate_fraction,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    limit = parse_memory(memory_limit, 1)
    _check_redis(url, cluster, "worker", connect_timeout)
    if nanny:
        from rdist.worker.nanny import Nanny

        args = [  # the URL (and its password) goes by the environment: argv is world-readable
            "worker",
            "--cluster",
            cluster,
            "--nthreads",
            str(nthreads),
            "--host",
            host,
            "--port",
            str(port),
            "--memory-limit",
            str(limit),
            "--memory-target-fraction",
            str(fractions.target),
            "--memory-spill-fraction",
            str(fractions.spill),
            "--memory-pause-fraction",
            str(fractions.pause),
            "--memory-terminate-fraction",
            str(fractions.terminate),
            "--transfer",
            transfer,
            "--resources",
            resources,
            "--log-level",
            log_level,
            "--timeout",
            str(connect_timeout),
        ]
        for flag, value in (
            ("--name", name),
            ("--listen-address", listen_address),
            ("--contact-address", contact_address),
            ("--contact-host", contact_host),
            ("--tls-cert", tls_cert),
            ("--tls-key", tls_key),
            ("--tls-ca", tls_ca),
        ):
            if value:
                args += [flag, value]
        sys.exit(Nanny(url, cluster, args, limit, fractions.terminate, spill_directory).run())
    from rdist.worker.server import run_worker

    run_worker(
        url,
        cluster,
        nanny_fd=nanny_fd,
        nthreads=nthreads,
        name=name,
        host=host,
        port=port,
        listen_address=listen_address,
        contact_address=contact_address,
        contact_host=contact_host,
        memory_limit=limit,
        memory_fractions=fractions,
        spill_directory=spill_directory,
        transfer=transfer,
        resources=parse_resources(resources),
        security=security,
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
    redis_url: str | None, cluster: str, n_workers: int, nthreads: int, log_level: str
) -> None:
    """Run a whole cluster here (embedded Redis unless a URL is given) until Ctrl-C."""
    from rdist.cluster import LocalCluster

    _setup_logging(log_level)
    url = redis_url or redis_url_from_env()
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
@click.option(
    "--cluster", default=None, help="cluster name (default: $RDIST_CLUSTER, else 'default')"
)
@click.option(
    "--host", default=None, help="interface to bind (default 127.0.0.1; others need a token)"
)
@click.option("--port", default=None, type=int, help="port (default: $PORT, else 8787)")
@click.option("--interval", default=None, type=float, help="seconds between live snapshots")
@log_option
@timeout_option
def dashboard(
    redis_url: str | None,
    cluster: str | None,
    host: str | None,
    port: int | None,
    interval: float | None,
    log_level: str,
    connect_timeout: float,
) -> None:
    """Serve the live web dashboard (reads Redis only). The token comes from
    RDIST_DASHBOARD_TOKEN, never from a flag, so it stays out of process listings."""
    from rdist.config import ConfigError, load_config
    from rdist.web import run_dashboard

    _setup_logging(log_level)
    try:
        config = load_config(
            {
                "redis.url": redis_url,
                "redis.cluster": cluster,
                "dashboard.host": host,
                "dashboard.port": port,
                "dashboard.interval": interval,
            }
        )
        if not config.get("redis.url"):
            raise ConfigError("no Redis URL: pass --redis-url or set RDIST_REDIS_URL / REDIS_URL")
        _check_redis(
            config.get("redis.url"), config.get("redis.cluster"), "dashboard", connect_timeout
        )
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
