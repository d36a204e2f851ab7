"""Every setting of rdist, defined once: name, default, environment forms, dask key, readers.

:mod:`rdist.config` layers the values (defaults < dask's ``distributed.*`` keys < YAML file <
environment < flags); the roles read them from the resulting ``Config``; the table in
``docs/configuration.md`` is generated from :data:`SETTINGS` (``rdist config --markdown``)
and a test checks it still matches. A new setting is one more entry here, nothing else:
its nested environment form ``RDIST_<SECTION>__<KEY>`` comes with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Who reads a setting (the "read by" column of the table).
SCHEDULER, WORKER, NANNY, CLIENT, DASHBOARD, LOCAL = (
    "scheduler",
    "worker",
    "nanny",
    "client",
    "dashboard",
    "LocalCluster",
)
EVERY_ROLE = (SCHEDULER, WORKER, NANNY, CLIENT, DASHBOARD, LOCAL)
#: LocalCluster gives its scheduler and workers its own Redis and cluster name
CONNECTING_ROLES = (SCHEDULER, WORKER, NANNY, CLIENT, DASHBOARD)


@dataclass(frozen=True)
class Setting:
    """One setting; its type is the type of ``default`` (``kind`` where the default is None)."""

    name: str  #: ``section.key``
    default: Any
    help: str
    readers: tuple[str, ...]
    #: environment variables besides ``RDIST_<SECTION>__<KEY>``, lowest precedence first
    aliases: tuple[str, ...] = ()
    #: the key of ``dask.config`` whose value is taken below rdist's own (``distributed.*``)
    dask: str | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False  #: masked wherever rdist prints it
    kind: type = str  #: the type of values when ``default`` is None
    #: a duration: numbers are seconds, text such as ``"30s"`` or ``"2 min"`` is read too
    duration: bool = False

    @property
    def env(self) -> str:
        section, _, key = self.name.partition(".")
        return f"RDIST_{section.upper()}__{key.upper()}"


SETTINGS: tuple[Setting, ...] = (
    # -- redis: where the cluster lives -----------------------------------------------------
    Setting(
        "redis.url",
        None,
        "Redis URL of the cluster (redis://, rediss://, unix://, redis+sentinel://, "
        "redis+cluster://); none: "
        "Client() starts a LocalCluster with an embedded Redis",
        CONNECTING_ROLES,
        aliases=("REDIS_URL", "RDIST_REDIS_URL"),
    ),
    Setting(
        "redis.cluster",
        "default",
        "cluster name: several clusters can share one Redis",
        CONNECTING_ROLES,
        aliases=("RDIST_CLUSTER",),
    ),
    Setting(
        "redis.ssl_cert_reqs",
        "required",
        "how rediss:// checks the server certificate (Heroku Redis's is self-signed: none)",
        EVERY_ROLE,
        aliases=("RDIST_REDIS_SSL_CERT_REQS",),
        choices=("required", "optional", "none"),
    ),
    # -- comm: reaching Redis and the peers ---------------------------------------------------
    Setting(
        "comm.connect_timeout",
        30.0,
        "seconds a role waits at start for Redis (and a client for a scheduler)",
        (SCHEDULER, WORKER, CLIENT, DASHBOARD),
        dask="distributed.comm.timeouts.connect",
        duration=True,
    ),
    Setting(
        "comm.transfer",
        "auto",
        "how data moves between workers and to clients: p2p, through redis, or auto "
        "(direct, Redis as the fallback)",
        (WORKER, CLIENT),
        aliases=("RDIST_TRANSFER",),
        choices=("p2p", "redis", "auto"),
    ),
    # -- scheduler ---------------------------------------------------------------------------
    Setting(
        "scheduler.worker_ttl",
        15.0,
        "seconds without a heartbeat after which a worker is removed",
        (SCHEDULER,),
        aliases=("RDIST_WORKER_TTL",),
        duration=True,
    ),
    Setting(
        "scheduler.client_ttl",
        30.0,
        "seconds without a heartbeat after which a client is dropped and its keys released",
        (SCHEDULER,),
        aliases=("RDIST_CLIENT_TTL",),
        duration=True,
    ),
    Setting(
        "scheduler.lease_ttl",
        2.0,
        "seconds the leader's lease lives unless renewed (every third of it); a standby "
        "takes over this long after the leader stopped renewing. Raise it only on a host so "
        "overloaded that the scheduler is not run for over a second at a time (at least 0.1 s)",
        (SCHEDULER,),
        duration=True,
    ),
    Setting(
        "scheduler.allowed_failures",
        3,
        "workers a task may kill before it errs with KilledWorker",
        (SCHEDULER,),
        dask="distributed.scheduler.allowed-failures",
    ),
    Setting(
        "scheduler.work_stealing",
        True,
        "move queued work from busy workers to idle ones",
        (SCHEDULER,),
        dask="distributed.scheduler.work-stealing",
    ),
    Setting(
        "scheduler.plugins",
        [],
        "scheduler plugins to load, as package.module:factory (comma separated in env)",
        (SCHEDULER,),
    ),
    Setting(
        "scheduler.accept_client_plugins",
        False,
        "unpickle the scheduler plugins clients register (off: the scheduler runs no code "
        "that clients send)",
        (SCHEDULER,),
    ),
    # -- amm: the scheduler's Active Memory Manager ------------------------------------------
    Setting(
        "amm.start",
        False,
        "run the Active Memory Manager on its own every amm.interval (client.amm.start() "
        "and stop() switch it at run time; retire_workers uses it either way)",
        (SCHEDULER,),
        dask="distributed.scheduler.active-memory-manager.start",
    ),
    Setting(
        "amm.interval",
        2.0,
        "seconds between two runs of the Active Memory Manager while it is started",
        (SCHEDULER,),
        dask="distributed.scheduler.active-memory-manager.interval",
        duration=True,
    ),
    Setting(
        "amm.measure",
        "optimistic",
        "which memory of a worker the manager compares: drops from the highest, copies to "
        "the lowest",
        (SCHEDULER,),
        dask="distributed.scheduler.active-memory-manager.measure",
        choices=("optimistic", "process", "managed", "managed_total", "unmanaged"),
    ),
    Setting(
        "amm.policies",
        ["ReduceReplicas"],
        "the manager's policies (comma separated in env; dask's class paths are read too)",
        (SCHEDULER,),
        dask="distributed.scheduler.active-memory-manager.policies",
    ),
    # -- worker ------------------------------------------------------------------------------
    Setting("worker.nthreads", 1, "threads running tasks", (WORKER,)),
    Setting("worker.host", "127.0.0.1", "interface the data server binds", (WORKER,)),
    Setting("worker.port", 0, "data server port (0: any free port)", (WORKER,)),
    Setting(
        "worker.contact_host",
        None,
        "host name or IP peers use to reach the worker (containers, NAT, a pod's IP)",
        (WORKER,),
    ),
    Setting(
        "worker.memory_limit",
        "0",
        'memory limit: bytes, "4GB", or "auto" (0: none)',
        (WORKER, NANNY),
    ),
    Setting(
        "worker.memory_target",
        0.6,
        "fraction of the limit held in memory before data spills (0: off)",
        (WORKER,),
        aliases=("RDIST_MEMORY_TARGET",),
        dask="distributed.worker.memory.target",
    ),
    Setting(
        "worker.memory_spill",
        0.7,
        "process memory fraction past which data spills until under target (0: off)",
        (WORKER,),
        aliases=("RDIST_MEMORY_SPILL",),
        dask="distributed.worker.memory.spill",
    ),
    Setting(
        "worker.memory_pause",
        0.8,
        "process memory fraction past which the worker takes no new tasks (0: off)",
        (WORKER,),
        aliases=("RDIST_MEMORY_PAUSE",),
        dask="distributed.worker.memory.pause",
    ),
    Setting(
        "worker.memory_terminate",
        0.95,
        "process memory fraction past which the nanny restarts the worker (0: off)",
        (WORKER, NANNY),
        aliases=("RDIST_MEMORY_TERMINATE",),
        dask="distributed.worker.memory.terminate",
    ),
    Setting(
        "worker.spill_directory",
        None,
        "where spilled data goes (none: a temporary directory)",
        (WORKER,),
        aliases=("RDIST_SPILL_DIRECTORY",),
    ),
    Setting("worker.resources", "", 'abstract resources, e.g. "GPU=2,MEM=1e9"', (WORKER,)),
    Setting("worker.nanny", True, "run the worker under a nanny that restarts it", (WORKER, NANNY)),
    Setting(
        "worker.heartbeat_interval",
        1.0,
        "seconds between a worker's heartbeats (keep well under scheduler.worker_ttl)",
        (WORKER,),
        duration=True,
    ),
    # -- client ------------------------------------------------------------------------------
    Setting(
        "client.heartbeat_interval",
        5.0,
        "seconds between a client's heartbeats (keep well under scheduler.client_ttl)",
        (CLIENT,),
        dask="distributed.client.heartbeat",
        duration=True,
    ),
    # -- dashboard ---------------------------------------------------------------------------
    Setting(
        "dashboard.host",
        "127.0.0.1",
        "interface the dashboard binds (others than loopback need a token)",
        (DASHBOARD,),
    ),
    Setting("dashboard.port", 8787, "dashboard port", (DASHBOARD,), aliases=("PORT",)),
    Setting(
        "dashboard.token",
        None,
        "token the dashboard asks for (never a flag: it stays out of process listings)",
        (DASHBOARD,),
        aliases=("RDIST_DASHBOARD_TOKEN",),
        secret=True,
    ),
    Setting(
        "dashboard.interval",
        1.0,
        "seconds between live snapshots",
        (DASHBOARD,),
        duration=True,
    ),
    # -- logging: the log buffer of each process (rdist.logbuffer) -------------------------
    Setting(
        "logging.length",
        1000,
        "lines of its log each process keeps, in memory and in Redis (get_worker_logs)",
        (SCHEDULER, WORKER, NANNY),
    ),
    # -- tls: the data plane -----------------------------------------------------------------
    Setting(
        "tls.cert",
        None,
        "certificate (PEM) of this process: data over TLS (no cert, no TLS)",
        (WORKER, CLIENT),
        aliases=("RDIST_TLS_CERT",),
    ),
    Setting(
        "tls.key",
        None,
        "private key of tls.cert, unless in that file",
        (WORKER, CLIENT),
        aliases=("RDIST_TLS_KEY",),
    ),
    Setting(
        "tls.ca",
        None,
        "CA certificate every member's certificate is signed by",
        (WORKER, CLIENT),
        aliases=("RDIST_TLS_CA",),
    ),
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}


def defaults() -> dict[str, dict[str, Any]]:
    """``{section: {key: default}}`` of every setting (a fresh copy each call)."""
    out: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        section, _, key = setting.name.partition(".")
        default = list(setting.default) if isinstance(setting.default, list) else setting.default
        out.setdefault(section, {})[key] = default
    return out


def markdown_table() -> str:
    """The table of docs/configuration.md: one row per setting."""
    rows = [
        "| setting | environment | default | dask key (below rdist's) | read by | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        env = ", ".join(f"`{name}`" for name in (s.env, *reversed(s.aliases)))
        dask = f"`{s.dask}`" if s.dask else ""
        choices = f" ({' / '.join(s.choices)})" if s.choices else ""
        rows.append(
            f"| `{s.name}` | {env} | `{_shown(s.default)}` | {dask} | {', '.join(s.readers)} "
            f"| {s.help}{choices} |"
        )
    return "\n".join(rows) + "\n"


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[]" if not value else ",".join(map(str, value))
    return str(value)


#: The markers around the generated table in docs/configuration.md.
DOC_BEGIN = "<!-- settings table: generated by `rdist config --markdown`, do not edit by hand -->\n"
DOC_END = "<!-- end of settings table -->"


def rewrite_doc(text: str) -> str:
    """``text`` (docs/configuration.md) with its table replaced by :func:`markdown_table`."""
    head, found, rest = text.partition(DOC_BEGIN)
    if not found or DOC_END not in rest:
        raise ValueError("the document has no settings table markers")
    return head + DOC_BEGIN + markdown_table() + DOC_END + rest.split(DOC_END, 1)[1]


if __name__ == "__main__":  # python -m rdist.settings docs/configuration.md: regenerate it
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        path.write_text(rewrite_doc(path.read_text()))
