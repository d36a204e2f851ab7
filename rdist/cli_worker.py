"""``rdist worker``: its flags as settings, and the settings it runs with, resolved once.

The command (:mod:`rdist.cli`) parses flags; here they become configuration overrides
(:data:`WORKER_FLAGS`), and :class:`WorkerSettings` reads back every value the worker and
its nanny need -- from flags, environment, the YAML file, dask's configuration or the
defaults of :mod:`rdist.settings`, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from rdist.config import Config

if TYPE_CHECKING:
    from rdist.comm.security import Security
    from rdist.worker.memory import MemoryFractions

#: ``rdist worker`` flag (click's parameter name) -> the setting it overrides
WORKER_FLAGS = {
    "cluster": "redis.cluster",
    "connect_timeout": "comm.connect_timeout",
    "nthreads": "worker.nthreads",
    "host": "worker.host",
    "port": "worker.port",
    "contact_host": "worker.contact_host",
    "memory_limit": "worker.memory_limit",
    "memory_target_fraction": "worker.memory_target",
    "memory_spill_fraction": "worker.memory_spill",
    "memory_pause_fraction": "worker.memory_pause",
    "memory_terminate_fraction": "worker.memory_terminate",
    "spill_directory": "worker.spill_directory",
    "transfer": "comm.transfer",
    "nanny": "worker.nanny",
    "resources": "worker.resources",
    "tls_cert": "tls.cert",
    "tls_key": "tls.key",
    "tls_ca": "tls.ca",
}


def worker_flags(flags: dict[str, Any]) -> dict[str, Any]:
    return {WORKER_FLAGS[name]: value for name, value in flags.items()}


@dataclass(frozen=True)
class WorkerSettings:
    """What ``rdist worker`` runs with, resolved from the configuration (flags included)."""

    cluster: str
    connect_timeout: float
    nthreads: int
    host: str
    port: int
    contact_host: str | None
    memory_limit: int
    fractions: MemoryFractions
    spill_directory: str | None
    transfer: str
    nanny: bool
    resources: str
    security: Security
    heartbeat_interval: float
    tls: tuple[str | None, str | None, str | None]

    @classmethod
    def of(cls, config: Config) -> WorkerSettings:
        from rdist.cluster import parse_memory
        from rdist.comm.security import Security
        from rdist.worker.memory import MemoryFractions

        w = config.section("worker")
        try:  # a bad value is said before Redis is asked
            fractions = MemoryFractions(
                *(float(w[f"memory_{n}"]) for n in ("target", "spill", "pause", "terminate"))
            )
            security = Security.from_config(config).check()
            limit = parse_memory(w["memory_limit"], 1)
        except ValueError as exc:  # ConfigError included
            raise click.BadParameter(str(exc)) from None
        tls = config.section("tls")
        return cls(
            cluster=str(config.get("redis.cluster")),
            connect_timeout=float(config.get("comm.connect_timeout")),
            nthreads=int(w["nthreads"]),
            host=str(w["host"]),
            port=int(w["port"]),
            contact_host=w["contact_host"] or None,
            memory_limit=limit,
            fractions=fractions,
            spill_directory=w["spill_directory"] or None,
            transfer=str(config.get("comm.transfer")),
            nanny=bool(w["nanny"]),
            resources=str(w["resources"]),
            security=security,
            heartbeat_interval=float(w["heartbeat_interval"]),
            tls=(tls.get("cert"), tls.get("key"), tls.get("ca")),
        )

    def child_args(
        self,
        log_level: str,
        name: str | None,
        listen_address: str | None,
        contact_address: str | None,
    ) -> list[str]:
        """The nanny's worker command line: every resolved value as a flag, so the child
        runs with what the parent resolved; the URL (and its password) goes by the
        environment, as argv is world-readable."""
        args = [
            "worker",
            "--cluster",
            self.cluster,
            "--nthreads",
            str(self.nthreads),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--memory-limit",
            str(self.memory_limit),
            "--memory-target-fraction",
            str(self.fractions.target),
            "--memory-spill-fraction",
            str(self.fractions.spill),
            "--memory-pause-fraction",
            str(self.fractions.pause),
            "--memory-terminate-fraction",
            str(self.fractions.terminate),
            "--transfer",
            self.transfer,
            "--resources",
            self.resources,
            "--log-level",
            log_level,
            "--timeout",
            str(self.connect_timeout),
        ]
        cert, key, ca = self.tls
        for flag, value in (
            ("--name", name),
            ("--listen-address", listen_address),
            ("--contact-address", contact_address),
            ("--contact-host", self.contact_host),
            ("--tls-cert", cert),
            ("--tls-key", key),
            ("--tls-ca", ca),
        ):
            if value:
                args += [flag, value]
        return args
